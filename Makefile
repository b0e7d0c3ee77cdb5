# Thin aliases; the logic lives in cargo and in scripts/.
PORT ?= 8080

.PHONY: run test build docker bench fuzz soak interop

## run: build in release mode and serve on $(PORT) (a development token if WXMP_TOKEN is unset)
run:
	cargo build --release
	@scripts/run.sh $(PORT)

## test: format check, clippy with warnings as errors, every test, vendor/tiny_http = 0.12.0 + patches
test:
	scripts/check-vendor.sh
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo test --all-targets
	cargo test --doc

build:
	cargo build --release

## docker: build the image (needs a Docker engine)
docker:
	docker build -t wxmp .

## bench: wrk load benchmarks and criterion micro-benchmarks
bench:
	scripts/bench.sh

## fuzz: run each fuzz target for FUZZ_SECONDS (default 60)
fuzz:
	scripts/fuzz.sh

## soak: a million mixed requests, then check errors and memory
soak:
	scripts/soak.sh

## interop: cross-check safe mode against Python's wechatpy
interop:
	scripts/interop.sh
