"""Limits and budgets, one row per subject: a workspace, one of its keys, or the default of
each of its end users. A missing row (or a null field) means no limit of that kind."""

from __future__ import annotations

from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from accounts.models import ApiKey, Workspace

# Budgets whose micro-credits stay exact in Redis's Lua numbers (doubles: integers exact below
# 2**53).
MAX_CREDITS = 1_000_000_000
# Above 0: at 0 every answer cost 0 credits, and a budget never ran out.
MIN_PER_USD = Decimal("0.000001")
# Credits per USD at most: a request's cost is counted in Redis as integer micro-credits (INCRBY,
# 64-bit), and 10^14 credits per USD overflowed it on a $100 request (ERR "increment or
# decrement would overflow", answered as Redis being down: a 503 for every request).
MAX_PER_USD = Decimal(1_000_000)


class Subject(models.TextChoices):
    WORKSPACE = "workspace", "Workspace"
    API_KEY = "api_key", "API key"
    END_USER = "end_user", "Each end user (default)"


class Period(models.TextChoices):
    DAY = "day", "Day (UTC)"
    WEEK = "week", "Week (ISO, UTC)"
    MONTH = "month", "Month (UTC)"
    NONE = "none", "None (lifetime)"


class Limit(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    subject = models.CharField(max_length=16, choices=Subject.choices)
    api_key = models.ForeignKey(
        ApiKey, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    rpm = models.PositiveIntegerField(null=True, blank=True, help_text="Requests per minute.")
    tpm = models.PositiveIntegerField(null=True, blank=True, help_text="Tokens per minute.")
    max_concurrent = models.PositiveIntegerField(null=True, blank=True)
    budget_credits = models.DecimalField(
        max_digits=20,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(MAX_CREDITS)],
        help_text="Credits per period.",
    )
    budget_period = models.CharField(max_length=8, choices=Period.choices, default=Period.MONTH)
    # When its budget's count last started again from the usage records: set where there was
    # none, or moved to another period (services.budget_count_restart). It names the budget's
    # Redis key (policy.Rule.version); a change of a rate or of the amount keeps the count.
    budget_since = models.DateTimeField(null=True, blank=True, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "subject"],
                condition=models.Q(api_key__isnull=True),
                name="one_limit_per_workspace_subject",
            ),
            models.UniqueConstraint(fields=["api_key"], name="one_limit_per_api_key"),
            models.CheckConstraint(
                condition=models.Q(subject="api_key", api_key__isnull=False)
                | (~models.Q(subject="api_key") & models.Q(api_key__isnull=True)),
                name="api_key_iff_key_subject",
            ),
        ]

    def __str__(self) -> str:
        who = self.api_key_id if self.api_key_id else self.get_subject_display()
        return f"limits of {who} ({self.workspace_id})"


class CreditUnit(models.Model):
    """What a workspace calls a credit and how many make one US dollar of list price."""

    workspace = models.OneToOneField(Workspace, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=40, default="credits")
    per_usd = models.DecimalField(
        max_digits=20,
        decimal_places=6,
        default=1,
        validators=[MinValueValidator(MIN_PER_USD), MaxValueValidator(MAX_PER_USD)],
    )

    def __str__(self) -> str:
        return f"{self.per_usd} {self.name} per USD ({self.workspace_id})"
