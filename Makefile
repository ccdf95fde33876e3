# Everyday commands. CI runs `scripts/test` (the same as `make test`).
.PHONY: run test fmt lint bench

run:
	cargo run --release -- serve

test:
	scripts/test

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

bench:
	cargo run --release -- bench intake
