#!/usr/bin/env bash
# Moved to bench/credential.sh (kept so that older instructions still work).
exec "$(dirname "$0")/../bench/credential.sh" "$@"
