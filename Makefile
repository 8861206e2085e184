# Shortcuts for the scripts the README documents.
.PHONY: run test ci lint

run:
	./scripts/run

test:
	./scripts/test

lint:
	uv run ruff check . && uv run ruff format --check . && for t in packages/* services/api tests; do uv run mypy $$t || exit 1; done && uv run lint-imports

ci:
	bash .ci/run
