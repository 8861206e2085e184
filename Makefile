# Shortcuts for the scripts the README documents.
.PHONY: run test ci lint

run:
	./scripts/run

test:
	./scripts/test

lint:
	uv run ruff check . && uv run ruff format --check . && uv run mypy && uv run lint-imports

ci:
	bash .ci/run
