"""Workspaces and their keys in the admin. Keys are created and revoked, and workspaces
deleted, through accounts.services, as the API does, so the cached key check of every process
is voided at once. Deleting a workspace marks it and has a worker delete its rows
(services.workspace_delete_begin): the admin's request no longer waits for millions of rows."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from accounts import admin_form_tokens, deletion, services
from accounts.admin_form_tokens import FIELD as FORM_TOKEN
from accounts.admin_workspaces import LiveWorkspaces
from accounts.models import ApiKey, Workspace
from config.admin_deletion import CountsOnDelete

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
        obj.raw_key = created.raw_key  # for response_add, the one page that shows it

    def add_view(self, request, form_url="", extra_context=None):
        """A form's token makes one key (accounts.admin_form_tokens): a reload of the answer
        that showed the new key, or Back then Forward, sent the form again and made a second
        key, its secret on the page. A send with a used token makes nothing and names the key
        made; one with no token, or one this session never got, is refused on the form."""
        if request.method != "POST":
            return super().add_view(request, form_url, extra_context)
        if not self.has_add_permission(request):
            raise PermissionDenied
        token = request.POST.get(FORM_TOKEN, "")
        made = admin_form_tokens.key_made(request.session, token)
        if made is not None:
            return self._made_page(request, key=ApiKey.objects.filter(pk=made).first())
        claimed = admin_form_tokens.issued(request.session, token)
        if claimed and not admin_form_tokens.claim(token):
            return self._made_page(request, key=None)  # a send of this form at once makes it
        try:
            return super().add_view(request, form_url, extra_context)
        finally:
            if claimed and admin_form_tokens.key_made(request.session, token) is None:
                admin_form_tokens.release(token)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The key's own page revokes it ("Revoke this key": a leaked key's page offered Delete
        only, revoking was a list action): through the service, the form's other edits not
        saved, and back to the same page, which shows when."""
        revoking = request.method == "POST" and "_revoke" in request.POST
        key = self.get_object(request, object_id) if revoking else None
        if key is None:  # not revoking, or no such key (Django's page says so)
            return super().change_view(request, object_id, form_url, extra_context)
        if not self.has_change_permission(request, key):
            raise PermissionDenied
        if key.revoked_at is not None:
            self.message_user(request, f"{key} was already revoked.", messages.WARNING)
        else:
            key = services.api_key_revoke(workspace=key.workspace, key_id=key.id)
            self.message_user(request, f"Revoked {key} at {key.revoked_at:%Y-%m-%d %H:%M:%S} UTC.")
        return HttpResponseRedirect(request.path)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is not None:
            return form

        def clean(self):
            # a send without the token this session was given (none, or one never given out)
            if not admin_form_tokens.issued(request.session, self.data.get(FORM_TOKEN, "")):
                raise ValidationError(
                    "This form was not given out to this session, or is too old: nothing was "
                    "made. Check it and save again.",
                    code="form_token",
                )
            return form.clean(self)

        return type(form.__name__, (form,), {"clean": clean})

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if add:  # every add form shown gets a token of its own, a form shown again too
            context = {**context, "form_token": admin_form_tokens.issue(request.session)}
        return super().render_change_form(request, context, add, change, form_url, obj)

    def response_add(self, request, obj, post_url_continue=None):
        """The new key on the answer to the form's POST, the one page that shows it, never
        kept (admin_view's never_cache: no-store, so Back and Forward ask again, and the
        form's token answers that). It was a message for the next page, and Django keeps
        messages in a cookie: the key went back and forth in a readable `messages` cookie (and
        into every log of request headers on the way). Kept in the session for a redirect's
        GET, it lay in plain text in the database, where keys are hashed."""
        token = request.POST[FORM_TOKEN]  # checked by the form's clean
        admin_form_tokens.mark_used(request.session, token, key_id=str(obj.pk))
        return self._made_page(request, key=obj, raw_key=obj.raw_key)

    def _made_page(self, request, *, key: ApiKey | None, raw_key: str | None = None):
        context = {
            **self.admin_site.each_context(request),
            "title": "New API key",
            "key": key,
            "raw_key": raw_key,
            "change_url": key and reverse("admin:accounts_apikey_change", args=[key.pk]),
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
