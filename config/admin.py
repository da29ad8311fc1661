"""The admin site for operators: Engram's header, login by email, the end-user pages, and no
"View site" link (the service has no public site at /)."""

from __future__ import annotations

from functools import wraps

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import BadRequest


class EmailLoginForm(AdminAuthenticationForm):
    """Operators sign in with their email (accounts.backends.EmailBackend)."""

    # Django's named the User model's field: "the correct username and password", under a box
    # labelled Email.
    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "invalid_login": "Please enter the correct email and password for a staff account. "
        "Note that the password is case-sensitive.",
    }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["username"].label = "Email"
        self.fields["username"].widget.attrs["autocomplete"] = "email"


class EngramAdminSite(admin.AdminSite):
    site_header = "Engram admin"
    site_title = "Engram admin"
    index_title = "Workspaces, memories and usage"
    site_url = None
    login_form = EmailLoginForm

    def admin_view(self, view, cacheable=False):
        """Every admin page refuses a NUL in its path, query or form (a 400): PostgreSQL refuses
        one in a query, and a row's page (/admin/memory/memory/a%00b/change/), a list filtered
        by one (?workspace__id__exact=ws_%00), a form whose raw-id box held one (a limit's
        workspace: the form shown again looks it up) or a list action on a row id with one
        answered with a 500."""
        inner = super().admin_view(view, cacheable)

        @wraps(inner)
        def refusing_nul(request, *args, **kwargs):
            fields = request.POST.lists() if request.method == "POST" else ()
            if "\x00" in request.path or any(
                "\x00" in key or any("\x00" in value for value in values)
                for key, values in (*request.GET.lists(), *fields)
            ):
                raise BadRequest("NUL characters are not allowed.")
            return inner(request, *args, **kwargs)

        return refusing_nul

    def get_urls(self):
        from memory.admin_users import user_urls

        return user_urls(self) + super().get_urls()

    def get_app_list(self, request, app_label=None):
        from memory.admin_users import app_entry

        apps = super().get_app_list(request, app_label)
        for app in apps:
            # only for those allowed to open it: a staff user who may see memories alone was
            # offered a link to a 403
            if app["app_label"] == "memory" and (entry := app_entry(request)):
                app["models"].append(entry)
                app["models"].sort(key=lambda m: m["name"])
        return apps
