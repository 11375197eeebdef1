//go:build tools

// Package tools pins the Dex OpenID Connect provider that the test suite
// starts on loopback (tests/oidc_provider.py). Built by scripts/build_dex.sh.
package tools

import _ "github.com/dexidp/dex/cmd/dex"
