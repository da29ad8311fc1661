"""Gateway data: usage per request, per-workspace provider credentials and model aliases."""

from functools import partial

from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from accounts.models import Workspace
from config.common.ids import new_id


class Provider(models.TextChoices):
    OPENAI = "openai", "OpenAI-compatible"
    ANTHROPIC = "anthropic", "Anthropic"
    LOCAL = "local", "Local (offline)"


class Dialect(models.TextChoices):
    """What an OpenAI-compatible upstream reads (completions.providers.openai_compatible):
    OpenAI's newer names as sent, or the older ones every server reads. The same values as
    OPENAI_DIALECT, the deployment's upstream's."""

    AUTO = "auto", "Auto: OpenAI's by its host or the model's name"
    OPENAI = "openai", "OpenAI's: the body as the client sent it"
    GENERIC = "generic", "Generic: max_tokens and system, as every server reads them"


class UsageRecord(models.Model):
    """One row per completion request, written off the request path (see completions.usage)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    api_key_id = models.CharField(max_length=40, blank=True, default="")
    user_id = models.CharField(max_length=200, blank=True, default="", help_text="the end user")
    request_id = models.CharField(max_length=128)
    client_request_id = models.CharField(max_length=200, blank=True, default="")
    model = models.CharField(max_length=200, blank=True, default="")
    upstream_model = models.CharField(max_length=200, blank=True, default="")
    provider = models.CharField(max_length=20, blank=True, default="")
    stream = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=64, blank=True, default="")
    prompt_tokens = models.IntegerField(null=True, blank=True)
    completion_tokens = models.IntegerField(null=True, blank=True)
    total_tokens = models.IntegerField(null=True, blank=True)
    # Of the prompt tokens: read from the upstream's cache, and written to it (each its price)
    cached_tokens = models.IntegerField(null=True, blank=True)
    cache_write_tokens = models.IntegerField(null=True, blank=True)
    latency_ms = models.FloatField()
    upstream_ms = models.FloatField(null=True, blank=True)
    incomplete = models.BooleanField(default=False)
    agent_id = models.CharField(max_length=40, blank=True, default="", help_text="agent called")
    agent_version = models.PositiveIntegerField(null=True, blank=True)
    credits = models.FloatField(null=True, blank=True, help_text="in the workspace's unit")
    # The unit `credits` were counted in (the workspace's credit_unit.per_usd then; null: a
    # record from before it was kept, counted as in today's unit). A budget's count converts
    # the credits spent before a change of the unit to the new one (usage_credits_since): they
    # keep their value in USD.
    credits_per_usd = models.DecimalField(max_digits=20, decimal_places=6, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # The upstream reported no usage (a stream cut before it, llama.cpp's server, a proxy):
    # the tokens are the estimate the credits were charged for (charging._used), as an agent
    # run's step keeps its `usage_estimated`. Stored null, the credits showed against 0 tokens.
    usage_estimated = models.BooleanField(default=False, db_default=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["workspace", "created_at"]),
            # A page of /v1/usage?group_by=user reads its users in this order and stops at the
            # page's last (1,000,000 rows: 12 ms, from 1.1 s sorting every user of the range);
            # an end user's budget seed and erasure read their rows by it too.
            models.Index(fields=["workspace", "user_id", "created_at"], name="usage_user"),
        ]

    def __str__(self) -> str:
        return (
            f"{self.model or 'request'} at {self.created_at:%Y-%m-%d %H:%M:%S}, {self.status_code}"
        )


class UsageErasure(models.Model):
    """An erased user's second pass over usage records, owed from `due_at`: records still in
    a process's buffer at the erasure are written after it with the plain id
    (completions.services.usage_erase). The task sent on commit does it on time; the sweep
    (memory.sweep_jobs) does it when that task was lost with the broker's data. The pass
    deletes the row, which names the user."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    user_id = models.CharField(max_length=200)
    due_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "user_id"], name="one_usage_erasure")
        ]
        indexes = [models.Index(fields=["due_at"])]

    def __str__(self) -> str:
        return f"usage erasure due at {self.due_at:%Y-%m-%d %H:%M:%S}"


class ProviderCredential(models.Model):
    """A workspace's own upstream for one provider; the secret is Fernet-encrypted at rest."""

    id = models.CharField(
        primary_key=True, max_length=40, default=partial(new_id, "cred"), editable=False
    )
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    provider = models.CharField(
        max_length=20, choices=[c for c in Provider.choices if c[0] != Provider.LOCAL]
    )
    base_url = models.URLField(
        max_length=500, blank=True, default="", help_text="Blank: the provider's default URL."
    )
    dialect = models.CharField(
        max_length=10,
        choices=Dialect.choices,
        default=Dialect.AUTO,
        help_text="OpenAI-compatible provider only: whether the server is OpenAI's (its "
        "reasoning models refuse max_tokens) or reads the older names (Ollama, vLLM, Mistral). "
        "Auto guesses by the host (openai.com, azure.com) and the model's name (gpt-*, o3...): "
        "set it for a proxy in front of OpenAI that names its models itself.",
    )
    secret_encrypted = models.TextField(blank=True, default="", editable=False)
    secret_hint = models.CharField(max_length=12, blank=True, default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "provider"], name="one_credential_per_provider"
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_provider_display()} for {self.workspace_id}"

    def set_secret(self, raw: str) -> None:
        from config.common.crypto import encrypt

        self.secret_encrypted = encrypt(raw) if raw else ""
        self.secret_hint = f"…{raw[-4:]}" if len(raw) >= 8 else ("…" if raw else "")

    def get_secret(self) -> str:
        from config.common.crypto import decrypt

        return decrypt(self.secret_encrypted) if self.secret_encrypted else ""


class ModelAlias(models.Model):
    """A workspace's name for a model: `alias` is sent upstream as `target_model`."""

    id = models.CharField(
        primary_key=True, max_length=40, default=partial(new_id, "alias"), editable=False
    )
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    alias = models.CharField(max_length=200)
    target_model = models.CharField(max_length=200)
    provider = models.CharField(
        max_length=20,
        choices=Provider.choices,
        blank=True,
        default="",
        help_text="Blank: route the target model by its name.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["alias"]
        verbose_name_plural = "model aliases"
        constraints = [
            models.UniqueConstraint(fields=["workspace", "alias"], name="one_alias_per_name")
        ]

    def __str__(self) -> str:
        return f"{self.alias} → {self.target_model}"


from completions.agents.models import Agent, AgentVersion  # noqa: E402, F401 - registered here
from completions.tools.models import Approval, Execution, Tool  # noqa: E402, F401 - registered here


class Price(models.Model):
    """List price of a model in US dollars per million tokens. `model` matches the upstream
    model name exactly or as its longest prefix (`gpt-4o-mini` prices `gpt-4o-mini-2024-07-18`).
    Edited in the admin (completions.pricing keeps the table cached in every process)."""

    model = models.CharField(max_length=200, unique=True)
    # Not below 0: a negative price gave credits back to budgets, and the credits counter of
    # /metrics refused the negative amount, a 500 after the upstream had answered.
    input_per_million = models.DecimalField(
        max_digits=12, decimal_places=6, default=0, validators=[MinValueValidator(0)]
    )
    cached_input_per_million = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Prompt tokens the upstream read from its cache. Blank: 0.1× the input "
        "price for models served by Anthropic, else the input price.",
    )
    cache_write_per_million = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Prompt tokens the upstream wrote to its cache (Anthropic's "
        "cache_creation_input_tokens). Blank: 1.25× the input price for models served by "
        "Anthropic (a 5-minute cache write), else the input price.",
    )
    output_per_million = models.DecimalField(
        max_digits=12, decimal_places=6, default=0, validators=[MinValueValidator(0)]
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model"]

    def __str__(self) -> str:
        return f"{self.model}: ${self.input_per_million} in / ${self.output_per_million} out"
