from functools import partial

from django.db import models

from accounts.models import Workspace
from config.common.ids import new_id

ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
ISSUER_MAX_LENGTH = 500
MAX_LEEWAY_SECONDS = 300
MIN_SECRET_LENGTH = 32  # an HS256 secret shorter than its hash can be guessed offline
MAX_SECRET_LENGTH = 500


class Issuer(models.Model):
    """An identity provider a workspace trusts to name its end users.

    Keys come from `jwks_url` (asymmetric algorithms only) or an HS256 secret (HMAC only, kept
    encrypted): never both, so a token cannot pass an RSA public key off as an HMAC secret.
    """

    id = models.CharField(
        primary_key=True, max_length=40, default=partial(new_id, "issuer"), editable=False
    )
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="issuers")
    issuer = models.CharField(max_length=ISSUER_MAX_LENGTH, help_text="The tokens' `iss`, exactly.")
    audiences = models.JSONField(default=list, help_text="Accepted `aud` values (at least one).")
    jwks_url = models.URLField(max_length=1000, blank=True, default="")
    hs256_secret_encrypted = models.TextField(blank=True, default="", editable=False)
    algorithms = models.JSONField(default=list, blank=True, help_text="Empty: the defaults.")
    user_claim = models.CharField(max_length=100, default="sub")
    required_scope = models.CharField(max_length=200, blank=True, default="")
    leeway_seconds = models.PositiveIntegerField(default=30)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "accounts"
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "issuer"], name="one_issuer_per_workspace")
        ]
        indexes = [models.Index(fields=["issuer"], name="issuer_iss_idx")]

    def __str__(self) -> str:
        return f"{self.issuer} ({self.workspace_id})"

    @property
    def uses_secret(self) -> bool:
        return bool(self.hs256_secret_encrypted)

    def set_secret(self, raw: str) -> None:
        from config.common.crypto import encrypt

        self.hs256_secret_encrypted = encrypt(raw) if raw else ""

    def get_secret(self) -> str:
        from config.common.crypto import decrypt

        return decrypt(self.hs256_secret_encrypted) if self.hs256_secret_encrypted else ""
