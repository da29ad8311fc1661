"""The admin's history (django.contrib.admin.models.LogEntry) of rows that are erased.

A LogEntry keeps `object_repr`, the row's `str()` when an operator added, changed or deleted
it: a memory's text, a message's words, a conversation's title. It outlived the row: erasing
an end user, or deleting a workspace, left those words in `django_admin_log` (and in the
admin's "Recent actions"). Erasures, and a person's deletion of a memory or a conversation,
delete the entries of the rows they delete with this; the admins of rows whose str() is their
text log a deletion by the row's id (DeletionLoggedById).
"""

from __future__ import annotations

from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db.models import F, Model, QuerySet, TextField
from django.db.models.functions import Cast

from config.admin_save import RefusalsOnTheForm


def log_entries_delete(
    *, model: type[Model], rows: QuerySet, field: str = "pk", keep_deletion: bool = False
) -> int:
    """Delete the admin log entries of the `model` rows whose ids are `field` of `rows` (the
    rows themselves, or rows naming them: a deleted memory's MemoryEvents); how many. Reads
    nothing into Python: one DELETE, the ids a subquery.

    keep_deletion: the admin's record of the deletion under way stays, the one that names the
    row by its id alone (DeletionLoggedById writes it just before the delete)."""
    meta = model._meta
    ids = rows.order_by().values_list(Cast(field, TextField()))
    entries = LogEntry.objects.filter(
        content_type__app_label=meta.app_label,  # its content type, in the statement too
        content_type__model=meta.model_name,
        object_id__in=ids,
    )
    if keep_deletion:
        entries = entries.exclude(action_flag=DELETION, object_repr=F("object_id"))
    return entries._raw_delete(LogEntry.objects.db)


class DeletionLoggedById(RefusalsOnTheForm):
    """The admin's record of a deletion names the row by its id: Django wrote its str() (a
    memory's text, a conversation's title), which outlived the row it was asked to delete. So
    does the "deleted successfully" message, which Django keeps in a cookie."""

    def response_delete(self, request, obj_display, obj_id):
        return super().response_delete(request, str(obj_id), obj_id)

    def log_deletions(self, request, queryset):
        return LogEntry.objects.bulk_create(
            LogEntry(
                user_id=request.user.pk,
                content_type_id=ContentType.objects.get_for_model(obj, for_concrete_model=False).pk,
                object_id=str(obj.pk),
                object_repr=str(obj.pk),
                action_flag=DELETION,
            )
            for obj in queryset
        )
