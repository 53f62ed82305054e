#!/usr/bin/env bash
# Fuzzes the SIP gateway's parsers on the stable toolchain for a fixed time per target.
#   scripts/fuzz-sip.sh [seconds per target, default 60] [seed, default random]
# Each target mutates its seeds (crates/sip-gateway/fuzz/corpus/<target> plus built-in messages) and
# fails on the first panic or broken invariant; the failing input is kept in <target dir>/fuzz-findings/.
# With a nightly toolchain, `cargo fuzz run screen` (or digest) in crates/sip-gateway adds coverage
# guidance.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
seed="${2:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}"
echo "fuzzing each SIP target for ${seconds}s, seed ${seed}"
cargo test --release -p sip-gateway --test fuzz --no-run
for target in datagram_screen multipart_bodies request_uris header_parameters_and_addresses \
    digest_credentials sdp_answers_mirrored_on_offers; do
    FUZZ_SECONDS="$seconds" FUZZ_SEED="$seed" \
        cargo test --release -q -p sip-gateway --test fuzz -- --exact "$target" --nocapture
done
