"""The admin's add forms choose among the workspaces not being deleted (`deleted_at` set): a
row added to one (a key, a limit, an alias, an agent, a memory) went on working, or waiting,
until the worker's last step, or was left for it to find. Their change forms check the
constraints naming the owner they show read-only (OwnerConstraints)."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from accounts.selectors import workspace_list
from config.admin_save import RefusalsOnTheForm


class LiveWorkspaces(RefusalsOnTheForm):
    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "workspace":
            kwargs["queryset"] = workspace_list()
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class OwnerConstraints(forms.ModelForm):
    """A change form's checks of the constraints that name a read-only owner (the workspace, a
    tool's agent). Not a field there, the owner made Django skip every constraint naming it:
    renaming an agent, a tool or an issuer to a name its workspace (or agent) already had
    passed the form, and the service's refusal at save answered with a bare JSON 400, or (an
    issuer) a "changed successfully" over a row left as it was."""

    owner_fields: tuple[str, ...] = ("workspace",)

    def validate_unique(self) -> None:
        super().validate_unique()
        if self.instance.pk is None:  # an add form has the owner as a field: checked above
            return
        shown = {*self.fields, *self.owner_fields}
        exclude = {f.name for f in self.instance._meta.fields if f.name not in shown}
        try:
            self.instance.validate_constraints(exclude=exclude)
        except ValidationError as exc:
            self.add_error(None, exc)
