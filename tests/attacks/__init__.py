"""The attack catalogue: RFC 9700 and the OpenID Connect threat model, one named test per attack."""
