"""The admin's add forms choose among the workspaces not being deleted (`deleted_at` set): a
row added to one (a key, a limit, an alias, an agent, a memory) went on working, or waiting,
until the worker's last step, or was left for it to find."""

from __future__ import annotations

from django.contrib import admin

from accounts.selectors import workspace_list


class LiveWorkspaces(admin.ModelAdmin):
    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "workspace":
            kwargs["queryset"] = workspace_list()
        return super().formfield_for_foreignkey(db_field, request, **kwargs)
