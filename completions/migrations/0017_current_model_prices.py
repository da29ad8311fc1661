"""Prices of models that a priced name's prefix used to price wrongly, or not at all.

Matching now takes a priced name for a model only when the rest of the model's name is a
snapshot date, "-latest", "-preview", a revision or a tag (completions.pricing._SNAPSHOT_TAIL):
"o1-mini" is no longer "o1". These rows keep those models priced. US dollars per million tokens
(input, cached input, output), list prices at the time of writing; a blank cached price follows
the provider's rule. Rows an operator already made are left as they are.
"""

from django.db import migrations

CURRENT_PRICES = {
    "gpt-5": ("1.25", "0.125", "10.00"),
    "gpt-5-mini": ("0.25", "0.025", "2.00"),
    "gpt-5-nano": ("0.05", "0.005", "0.40"),
    "chatgpt-4o-latest": ("5.00", None, "15.00"),
    "gpt-4o-audio-preview": ("2.50", None, "10.00"),
    "o1-mini": ("1.10", "0.55", "4.40"),
    "o1-pro": ("150.00", None, "600.00"),
    "o3-pro": ("20.00", None, "80.00"),
    "claude-opus-4-1": ("15.00", "1.50", "75.00"),
    "claude-opus-4-5": ("5.00", "0.50", "25.00"),
    "claude-sonnet-4-5": ("3.00", "0.30", "15.00"),
    "claude-haiku-4-5": ("1.00", "0.10", "5.00"),
}


def add_current_prices(apps, schema_editor):
    Price = apps.get_model("completions", "Price")
    for model, (inp, cached, out) in CURRENT_PRICES.items():
        Price.objects.get_or_create(
            model=model,
            defaults={
                "input_per_million": inp,
                "cached_input_per_million": cached,
                "output_per_million": out,
            },
        )


class Migration(migrations.Migration):
    dependencies = [("completions", "0016_execution_request_step")]

    operations = [migrations.RunPython(add_current_prices, migrations.RunPython.noop)]
