"""The admin site for operators: Engram's header, login by email, the end-user pages, and no
"View site" link (the service has no public site at /)."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm


class EmailLoginForm(AdminAuthenticationForm):
    """Operators sign in with their email (accounts.backends.EmailBackend)."""

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
