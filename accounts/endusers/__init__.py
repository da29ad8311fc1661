"""End-user tokens: an app's own users call Engram with their OAuth2/OIDC JWT.

A workspace trusts issuers (`Issuer`: `iss`, audiences, a JWKS URL or an HS256 secret); a JWT
bearer signed by one resolves, in accounts.authentication, to a Principal with `end_user` set
from the token's claim. `scope` is how the APIs keep such a caller to its own data.
"""
