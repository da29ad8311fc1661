from django.contrib import admin, messages
from django.utils import timezone

from accounts import services
from accounts.keys import generate_key, key_digest, key_prefix
from accounts.models import ApiKey, Workspace


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    fields = ("name", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "created_at", "last_used_at")
    can_delete = False
    show_change_link = True


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ("name", "id", "created_at")
    search_fields = ("name", "id")
    readonly_fields = ("id", "created_at")
    inlines = [ApiKeyInline]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "workspace", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix", "workspace__name", "workspace__id")
    readonly_fields = ("id", "prefix", "created_at", "last_used_at")
    fields = ("id", "workspace", "name", "prefix", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    def save_model(self, request, obj, form, change):
        if not change:
            raw = generate_key()
            obj.prefix, obj.digest = key_prefix(raw), key_digest(raw)
            super().save_model(request, obj, form, change)
            messages.warning(request, f"New API key (shown once, copy it now): {raw}")
            return
        super().save_model(request, obj, form, change)

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        for key in queryset.filter(revoked_at__isnull=True):
            services.api_key_revoke(workspace=key.workspace, key_id=key.id)
        self.message_user(request, f"Revoked at {timezone.now():%Y-%m-%d %H:%M:%S} UTC.")
