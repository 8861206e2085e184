# Shortcuts for the scripts the README documents.
.PHONY: run test ci lint

run:
	./scripts/run

test:
	./scripts/test

lint:
	./scripts/lint

ci:
	bash .ci/run
