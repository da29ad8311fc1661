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
"""

from __future__ import annotations

from django.contrib import admin

from config.common.errors import EDGE_ERRORS, api_error

_REFUSED = "_engram_refused_at_save"


class RefusalsOnTheForm(admin.ModelAdmin):
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
