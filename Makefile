# Thin aliases; the logic lives in cargo and in scripts/.
PORT ?= 8080

.PHONY: run install test build docker bench fuzz soak interop

## run: build in release mode and serve on $(PORT) (make run PORT=8081; a development token if
## WXMP_TOKEN is unset)
run:
	@scripts/run.sh $(PORT)

## install: cargo install --path . (puts wxmp in ~/.cargo/bin) and say whether that is on PATH
install:
	@scripts/install.sh

## test: checks its tools first (curl, patch, rustfmt, clippy), then vendor/tiny_http = 0.12.0 + patches, format, clippy -D warnings, every test, docs, the
## fuzz crate, and wechatpy and prometheus_client when installed
test:
	scripts/test.sh

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
