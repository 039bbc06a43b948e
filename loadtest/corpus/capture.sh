#!/usr/bin/env bash
# Captures the build-log corpus: real builds run on a terminal (`script` gives them a pty,
# so colours and CR progress lines come as a CI runner's log would keep them), each step
# between `::group::` / `::endgroup::` markers as a GitHub Actions runner prints them.
# Usage: loadtest/corpus/capture.sh [OUT_DIR]   (default: this folder). Needs cargo, npm,
# pip, apt-get, gcc and make, and the registries; takes some minutes.
set -euo pipefail
out=$(cd "${1:-$(dirname "$0")}" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export TERM=xterm-256color COLUMNS=120 LINES=40

# run NAME COMMAND: one log, on a pty, the command's own bytes (the tty's CRLF made LF).
run() {
  local name=$1; shift
  script -qfec "$*" /dev/null </dev/null | sed 's/\r$//' >"$out/$name.log" || true
  echo "$name: $(wc -c <"$out/$name.log") bytes"
}

# 1. A Rust build with colour: a small crate with a few dependencies, verbose, cargo's
#    progress bar on (CR lines).
mkdir -p "$work/rust/src"
cat >"$work/rust/Cargo.toml" <<'TOML'
[package]
name = "corpus-demo"
version = "0.1.0"
edition = "2021"
[dependencies]
serde = { version = "1", features = ["derive"] }
serde_json = "1"
regex = "1"
clap = { version = "4", features = ["derive"] }
tokio = { version = "1", features = ["full"] }
hyper = { version = "1", features = ["full"] }
tracing-subscriber = { version = "0.3", features = ["env-filter", "json"] }
rand = "0.9"
TOML
cat >"$work/rust/src/main.rs" <<'RS'
#[derive(serde::Serialize)]
struct Unused { a: u32 }
fn main() { let x = 5; let re = regex::Regex::new("a+").unwrap(); println!("{}", re.is_match("aa")); }
RS
run rust-build "cd $work/rust && echo '::group::cargo build' && CARGO_TARGET_DIR=$work/rust/target CARGO_TERM_COLOR=always CARGO_TERM_PROGRESS_WHEN=always CARGO_TERM_PROGRESS_WIDTH=100 nice cargo build -vv --color=always -j1 2>&1; echo '::endgroup::'; echo '::group::cargo test' && CARGO_TARGET_DIR=$work/rust/target nice cargo test --color=always -j1 2>&1; echo '::endgroup::'"

# 2. An npm install from the registry, verbose (timing and http lines), with its progress.
mkdir -p "$work/npm"
run npm-install "cd $work/npm && echo '::group::npm init' && npm init -y 2>&1 && echo '::endgroup::' && echo '::group::npm install' && npm install --color=always --loglevel=silly --no-audit --no-fund typescript eslint webpack webpack-cli express jest 2>&1; echo '::endgroup::'"

# 3. A pip install, verbose, into a fresh venv (wheels and an sdist build).
run pip-install "echo '::group::python -m venv' && python3 -m venv $work/venv && echo '::endgroup::' && echo '::group::pip install' && $work/venv/bin/pip install -vvv --progress-bar on --no-cache-dir requests flask numpy pandas pytest rich black 2>&1; echo '::endgroup::'"

# 4. An apt build step: update, then download and unpack packages as a container build does.
mkdir -p "$work/apt"
mkdir -p "$work/apt/archives/partial"
run apt-build "cd $work/apt && echo '::group::apt-get update' && apt-get update 2>&1; echo '::endgroup::'; echo '::group::apt-get install --download-only' && apt-get install -y --download-only -o Dir::Cache::archives=$work/apt/archives -o Debug::NoLocking=1 --reinstall build-essential cmake libssl-dev python3-dev libboost-dev 2>&1; echo '::endgroup::'; echo '::group::dpkg -x' && for d in $work/apt/archives/*.deb; do dpkg-deb -x \$d $work/apt/root && echo \"Unpacking \$(basename \$d) ...\"; dpkg-deb -c \$d | head -2000; done 2>&1; echo '::endgroup::'"

# 5. A C build with make and gcc, coloured diagnostics and warnings: zstd's library (the C
#    source that the zstd-sys crate ships; it comes without its Makefile, so one is written
#    here: one object per source file, then the archive), verbose command lines.
src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/zstd-sys-*/zstd 2>/dev/null | head -1)
if [ -n "$src" ]; then
  cp -r "$src" "$work/zstd"
  cat >"$work/zstd/lib/Makefile" <<'MK'
CFLAGS ?= -O1
SRCS := $(wildcard common/*.c compress/*.c decompress/*.c dictBuilder/*.c legacy/*.c deprecated/*.c)
OBJS := $(SRCS:.c=.o)
libzstd.a: $(OBJS)
	ar rcsv $@ $^
%.o: %.c
	$(CC) $(CFLAGS) -DZSTD_LEGACY_SUPPORT=5 -I. -Icommon -Ilegacy -c $< -o $@
MK
  run c-build "cd $work/zstd/lib && echo '::group::make libzstd.a' && nice make -j1 CFLAGS='-O1 -g -Wall -Wextra -Wconversion -Wshadow -Wcast-qual -fdiagnostics-color=always' 2>&1; echo '::endgroup::'; echo '::group::make clean' && make -n 2>&1 | head -5; echo '::endgroup::'; echo '::group::make libzstd.a (pedantic, -O2)' && make clean >/dev/null 2>&1; rm -f */*.o libzstd.a; nice make -j1 CFLAGS='-O2 -Wall -Wextra -Wpedantic -Wconversion -Wsign-conversion -Wcast-align -fdiagnostics-color=always' 2>&1; echo '::endgroup::'"
fi
ls -l "$out"
