"""A refusal at save time is an error on the admin's form, as a refusal at `clean()` is.

The forms run the services' checks in `clean()` (an agent's policy, a tool's fields, an
issuer's rules), but some refusals only come when the service saves: a name another request
took between the form's check and the save (the unique constraint), a row deleted or a
workspace marked for deletion meanwhile. Raised from `save_model`, the domain error went past
the admin to ErrorEnvelopeMiddleware, and the operator's page was replaced by a bare JSON
`{"error": ...}`; the issuer's admin showed the refusal beside "changed successfully".

`changeform_view` catches it (the save's transaction already rolled back) and shows the same
page again with the refusal on the form: on its field when the form has one of that name,
above the form otherwise. Every Engram ModelAdmin has it (tests/test_admin_pages checks).

PostgreSQL's refusals are refused on the form first: a JSON column's field reads its text with
the API's decoder and rules (config.common.jsonbody: no NaN, Infinity, 1e400, NUL or lone
surrogate, no nesting past MAX_DEPTH), which jsonb cannot store, and takes only the column's
shape, an object (metadata) or a list where its default is one. Django's field took any JSON:
the INSERT failed (a 500), and a memory's metadata of `[1, 2]` or `null` failed in the service
(a 500) or was saved for the API to answer and every reader of it to fail on.

So is a list's search the database would give up on: Django ANDs each word of the search box
(an OR over the list's search fields each), and its cost grows faster than the words (on a
few hundred rows: 200 words 0.3 s, 2,000 words 9 s, 8,000 a 503 after the 30 s statement
timeout, the web process held throughout). Past MAX_SEARCH_TERMS words the list says so and
shows no rows.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.text import smart_split

from config.common import jsonbody
from config.common.errors import EDGE_ERRORS, ApiError, api_error

_REFUSED = "_engram_refused_at_save"
# Words of one admin search (a quoted phrase is one): 20 took 0.15 s where 200 took 0.3 s.
MAX_SEARCH_TERMS = 20
_SHAPES: dict[type, str] = {dict: "a JSON object", list: "a list"}


class StorableJSONField(forms.JSONField):
    """A JSON column's form field: what jsonb can store, in the column's shape (see above)."""

    def __init__(self, *, name: str = "", shape: type | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.name = name
        self.shape = shape

    def bound_data(self, data, initial):
        """Refused text is shown again as it was typed: parsed, a lone surrogate in it could
        not be written into the page (a 500 again)."""
        if self.disabled or not isinstance(data, str):
            return super().bound_data(data, initial)
        try:
            return jsonbody.loads(data)
        except ApiError:
            return forms.fields.InvalidJSONInput(data)

    def to_python(self, value):
        if self.disabled or not isinstance(value, str) or value in self.empty_values:
            value = super().to_python(value)
        else:
            try:
                value = jsonbody.loads(value, param=self.name)
            except ApiError as exc:
                raise ValidationError(exc.message, code="invalid") from None
            if isinstance(value, str):
                value = forms.fields.JSONString(value)  # shown again quoted, as Django does
        if self.shape is None:
            return value
        if value is None:  # left empty, or `null`: the column's empty value (it has no NULL)
            return self.shape()
        if not isinstance(value, self.shape):
            raise ValidationError(f"Give {_SHAPES[self.shape]}.", code="invalid")
        return value


def json_form_field(db_field: models.JSONField, kwargs: dict) -> dict:
    """The form field kwargs of a JSON column (ModelAdmin.formfield_for_dbfield)."""
    # compared, not looked up: a default may be any callable (or, against Django's advice, a
    # dict, which cannot be a key)
    shape = next((kind for kind in _SHAPES if db_field.default is kind), None)
    return {"form_class": StorableJSONField, "name": db_field.name, "shape": shape, **kwargs}


class RefusalsOnTheForm(admin.ModelAdmin):
    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if isinstance(db_field, models.JSONField):
            kwargs = json_form_field(db_field, kwargs)
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def get_search_results(self, request, queryset, search_term):
        if len(list(smart_split(search_term))) > MAX_SEARCH_TERMS:
            self.message_user(
                request,
                f"Search for at most {MAX_SEARCH_TERMS} words (put a phrase in quotes to search "
                "it as one).",
                messages.ERROR,
            )
            return queryset.none(), False
        return super().get_search_results(request, queryset, search_term)

    def get_fields(self, request, obj=None):
        """No id on an add form: it showed the model's default, made for that page alone
        ("Id: mem_01…"), and the row got another one (made again at the POST, or by the
        service that creates it). The id is on the row's page once it exists."""
        fields = super().get_fields(request, obj)
        return fields if obj is not None else [name for name in fields if name != "id"]

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except EDGE_ERRORS as exc:
            if request.method != "POST" or hasattr(request, _REFUSED):
                raise
            setattr(request, _REFUSED, exc)
            # Again, from the POST: the form fails on the refusal and the page is shown as
            # for any invalid form (its values kept, the error beside them).
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        refused = getattr(request, _REFUSED, None)
        if refused is None:
            return form
        error = api_error(refused)

        def clean(self):
            data = form.clean(self)  # the form's own checks first, then the refusal
            field = getattr(refused, "field", None)
            self.add_error(field if field in self.fields else None, error.message)
            return data

        return type(form.__name__, (form,), {"clean": clean})
