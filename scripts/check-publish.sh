#!/usr/bin/env bash
# Checks that the crates can be published: `cargo publish --dry-run --workspace` packages ibauth,
# ibauth-sandbox, ibauth-gateway and ibauth-cli in dependency order and builds each from its
# package (unpublished workspace dependencies come from a local overlay, so this works before
# anything is on crates.io); then the packages' contents, the docs, and that a library user
# compiles none of the sandbox's or the CLI's dependencies. Needs the crates.io index (network).
# Usage: scripts/check-publish.sh [extra `cargo publish` arguments, e.g. --allow-dirty]
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "check-publish: $*" >&2
  exit 1
}

echo "== cargo publish --dry-run --workspace"
cargo publish --dry-run --workspace "$@"

echo "== package contents"
# The same packages again, without the build, where `cargo package` puts them.
metadata=$(cargo metadata --format-version 1 --no-deps)
package_dir=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' <<<"$metadata")/package
version=$(python3 -c 'import json, sys; print({p["name"]: p["version"] for p in json.load(sys.stdin)["packages"]}["ibauth"])' <<<"$metadata")
rm -f "$package_dir"/*.crate
cargo package --workspace --no-verify --quiet "$@" 2>&1 | { grep -v '^warning: ignoring \(test\|benchmark\) ' || true; }
for crate in ibauth ibauth-sandbox ibauth-gateway ibauth-cli; do
  file=$package_dir/$crate-$version.crate
  [[ -f $file ]] || fail "$file is missing after cargo package"
  list=$(tar -tzf "$file")
  echo "$crate: $(wc -l <<<"$list") files, $(wc -c <"$file") bytes compressed"
  for needed in Cargo.toml README.md LICENSE-MIT LICENSE-APACHE src/; do
    grep -q "^$crate-$version/$needed" <<<"$list" || fail "$crate's package lacks $needed"
  done
  # Test keys and the tests that need the workspace stay in the repository.
  if grep -E '\.pem$|/tests/|/benches/' <<<"$list"; then
    fail "$crate's package ships test files (above)"
  fi
done
# A dev-dependency of the library on the sandbox must be path-only (no version, not
# `.workspace = true`), so that publishing strips it: the sandbox depends on the library.
if tar -xzOf "$package_dir/ibauth-$version.crate" "ibauth-$version/Cargo.toml" |
  grep -E '^\[(dev-)?dependencies\.ibauth-sandbox\]|^ibauth-sandbox'; then
  fail "the published ibauth manifest depends on ibauth-sandbox"
fi

echo "== cargo doc (docs must build warning-free; docs.rs builds with nightly and --cfg docsrs)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps -p ibauth -p ibauth-sandbox -p ibauth-gateway
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  RUSTDOCFLAGS="--cfg docsrs -D warnings" cargo +nightly doc --locked --no-deps --all-features -p ibauth
else
  echo "(no nightly toolchain: docs.rs's own build, with --cfg docsrs, is not reproduced)"
fi

echo "== cargo tree -p ibauth (what a library user compiles)"
# Normal and build dependencies on every target; the same assertion is a test of the library
# (crates/ibauth/tests/dependencies.rs).
names=$(cargo tree --locked -p ibauth -e normal,build --target all --prefix none --format '{p}' |
  awk '{print $1}' | sort -u)
grep -qx reqwest <<<"$names" || fail "cargo tree printed no reqwest: is the output format right?"
for forbidden in axum axum-server clap clap_complete tracing-subscriber ibauth-sandbox ibauth-cli; do
  if grep -qx -- "$forbidden" <<<"$names"; then
    fail "ibauth depends on $forbidden: a library user would compile it ($(cargo tree --locked -p ibauth -e normal,build --target all -i "$forbidden" | head -20))"
  fi
done
echo "ibauth: $(wc -l <<<"$names") crates, none of the sandbox's or the CLI's"
echo "check-publish: ok"
