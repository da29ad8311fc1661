"""Workspaces and their keys in the admin. Keys are created and revoked, and workspaces
deleted, through accounts.services, as the API does, so the cached key check of every process
is voided at once. Deleting a workspace marks it and has a worker delete its rows
(services.workspace_delete_begin): the admin's request no longer waits for millions of rows."""

import time

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from accounts import deletion, services
from accounts.admin_workspaces import LiveWorkspaces
from accounts.models import ApiKey, Workspace
from config.admin_deletion import CountsOnDelete

# A new key's secret waits in the server-side session (never a cookie) between the add form's
# POST and the GET it redirects to, which takes it out: for this long at most if that GET
# never comes.
_NEW_KEYS = "accounts.new_api_keys"
_NEW_KEY_KEPT_SECONDS = 600

_DELETED_IN_BACKGROUND = (
    "Its keys no longer work; a worker deletes its rows in the background (the list shows it "
    "as being deleted until then)."
)


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    fields = ("name", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False  # a key is made by ApiKeyAdmin (api_key_create), which shows it once


@admin.register(Workspace)
class WorkspaceAdmin(CountsOnDelete):
    list_display = ("name", "id", "created_at", "state")
    search_fields = ("name", "id")
    readonly_fields = ("id", "created_at", "state")
    inlines = [ApiKeyInline]

    @staticmethod
    def owned(workspaces):
        from django.db.models import Q

        ids = workspaces.values("pk")
        for owned in deletion.owned_models():
            where = Q()
            for lookup in owned.lookups:
                where |= Q(**{f"{lookup}__in": ids})
            yield owned.model, owned.model._base_manager.filter(where)

    @admin.display(description="state")
    def state(self, obj: Workspace) -> str:
        if obj.deleted_at is None:
            return "active"
        return f"being deleted (since {obj.deleted_at:%Y-%m-%d %H:%M:%S} UTC)"

    def delete_model(self, request, obj):
        services.workspace_delete_begin(workspace=obj)

    def delete_queryset(self, request, queryset):
        for workspace in queryset:
            services.workspace_delete_begin(workspace=workspace)
        # The list's "Delete selected" said "Successfully deleted 2 workspaces." alone, while
        # their rows were still there and the list said "being deleted".
        self.message_user(request, _DELETED_IN_BACKGROUND, messages.INFO)

    def response_delete(self, request, obj_display, obj_id):
        """Django says "deleted successfully"; what is done by then is its keys."""
        self.message_user(request, _DELETED_IN_BACKGROUND, messages.INFO)
        return super().response_delete(request, obj_display, obj_id)


@admin.register(ApiKey)
class ApiKeyAdmin(LiveWorkspaces):
    list_display = ("name", "prefix", "workspace", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix", "workspace__name", "workspace__id")
    readonly_fields = ("id", "prefix", "created_at", "last_used_at", "revoked_at")
    fields = ("id", "workspace", "name", "prefix", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    def delete_model(self, request, obj):
        services.api_key_delete(workspace=obj.workspace, key_id=obj.id)

    def delete_queryset(self, request, queryset):
        for key in queryset.select_related("workspace"):
            self.delete_model(request, key)

    def get_readonly_fields(self, request, obj=None):
        fixed = ("workspace",) if obj is not None else ()
        return (*fixed, *self.readonly_fields)

    def save_model(self, request, obj, form, change):
        if change:  # only the name is editable: nothing cached depends on it
            super().save_model(request, obj, form, change)
            return
        created = services.api_key_create(workspace=obj.workspace, name=obj.name)
        obj.pk, obj.prefix = created.api_key.pk, created.api_key.prefix
        obj._state.adding = False
        obj.raw_key = created.raw_key  # for response_add, which keeps it for the page that shows it

    def get_urls(self):
        created = self.admin_site.admin_view(self.created_view)  # never cached (no-store)
        name = f"{self.opts.app_label}_{self.opts.model_name}_created"
        return [path("<path:object_id>/created/", created, name=name), *super().get_urls()]

    def response_add(self, request, obj, post_url_continue=None):
        """POST, redirect, GET: the new key was shown on the answer to the form's POST, and a
        reload (or Back then Forward) sent the form again and made a second key. The secret
        waits in the session for the one GET that shows it (created_view)."""
        now = time.time()
        waiting = {
            key_id: held
            for key_id, held in request.session.get(_NEW_KEYS, {}).items()
            if now - held["at"] < _NEW_KEY_KEPT_SECONDS  # never shown: not kept for good
        }
        waiting[str(obj.pk)] = {"raw_key": obj.raw_key, "at": now}
        request.session[_NEW_KEYS] = waiting
        return HttpResponseRedirect(
            reverse(
                "admin:accounts_apikey_created", args=[obj.pk], current_app=self.admin_site.name
            )
        )

    def created_view(self, request, object_id):
        """The new key's secret, on the first GET after its add form only: taken out of the
        session as it is shown, so a reload says it was shown and shows it no more."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        key = get_object_or_404(ApiKey.objects.select_related("workspace"), pk=object_id)
        waiting = request.session.get(_NEW_KEYS, {})
        held = waiting.pop(str(key.pk), None)
        if held is not None:
            request.session[_NEW_KEYS] = waiting
        fresh = held is not None and time.time() - held["at"] < _NEW_KEY_KEPT_SECONDS
        context = {
            **self.admin_site.each_context(request),
            "title": "New API key",
            "key": key,
            "raw_key": held["raw_key"] if fresh else None,
            "change_url": reverse("admin:accounts_apikey_change", args=[key.pk]),
            "list_url": reverse("admin:accounts_apikey_changelist"),
        }
        return TemplateResponse(request, "admin/accounts/apikey/created.html", context)

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke(self, request, queryset):
        # The count, not a bare "Revoked": keys revoked before were reported as revoked now.
        keys = list(queryset.filter(revoked_at__isnull=True).select_related("workspace"))
        for key in keys:
            services.api_key_revoke(workspace=key.workspace, key_id=key.id)
        if not keys:
            self.message_user(request, "The selected keys were already revoked.", messages.WARNING)
            return
        self.message_user(
            request,
            f"Revoked {len(keys)} key{'s' if len(keys) != 1 else ''}"
            f" at {timezone.now():%Y-%m-%d %H:%M:%S} UTC.",
        )


from accounts.endusers import admin as _endusers_admin  # noqa: E402, F401  (Issuer's admin)
