"""Django admin for memories (with history and source links), conversations, sessions, messages
and background jobs; the end-user pages are memory/admin_users.py.

Edits and deletes of memories go through the services, so the admin leaves history too; a
conversation deleted there takes the memories derived from it alone, as through the API.
"""

import json

from django import forms
from django.contrib import admin
from django.contrib.admin.actions import delete_selected
from django.urls import reverse
from django.utils.dateformat import format as date_format
from django.utils.html import format_html, format_html_join
from django.utils.text import capfirst
from django.utils.timezone import localtime

from accounts.admin_workspaces import LiveWorkspaces, OwnerConstraints
from config.admin_log import DeletionLoggedById
from config.admin_paging import LargeList, choices_filter
from config.common.ids import ID_RULE, as_user_id, is_id
from memory import services
from memory.admin_users import BackToUserPage, user_url
from memory.models import (
    SESSION_CONVERSATION_PREFIX,
    Conversation,
    Memory,
    MemoryEvent,
    Message,
    ProcessingJob,
    Session,
)
from memory.serializers import (
    KINDS,
    MEMORY_TEXT_MAX_CHARS,
    engram_metadata_problem,
    visible_text,
)


def _other_changes(event: MemoryEvent) -> str:
    """What an UPDATE changed besides the text (its kind, date, metadata), as " (kind: "fact"
    → "plan")": such an edit alone read as the text replaced by itself."""
    changed = [
        f"{field}: {json.dumps(change['old'])} → {json.dumps(change['new'])}"
        for field, change in (event.changes or {}).items()
        if field != "text"
    ]
    return f" ({'; '.join(changed)})" if changed else ""


def _link(obj, label: str | None = None) -> str:
    url = reverse(f"admin:memory_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, label or str(obj))


def _when(moment) -> str:
    """A time as the admin writes its own ("Dec. 6, 2026, 5:11 a.m."), to the second: a
    memory's events often come within one minute. str() gave "2026-12-06 05:11:17.464945+00:00"."""
    return date_format(localtime(moment), "N j, Y, g:i:s a")


def _confirmed_delete(modeladmin, request, queryset, action: str):
    """Django's delete action for an action of our own: its confirmation page first (the
    actions deleted at once on Go), which posts back to `action`; then the rows go through
    modeladmin.delete_queryset, one by one through the service."""
    response = delete_selected(modeladmin, request, queryset)
    if response is not None and response.context_data is not None:  # the page, not yet rendered
        response.context_data["action"] = action
    return response


_SOURCE_LINKS = Memory.sources.through._meta


def _without_source_links(deleted: tuple, extra: list | None = None) -> tuple:
    """get_deleted_objects' answer less the links of memories to their source messages, which
    Django listed as "Memory-message relationship: Memory_sources object (7)", rows nobody can
    open; plus `extra`, the [(model, rows)] that go too though no foreign key says so."""
    objects, counts, perms_needed, protected = deleted
    prefix = f"{capfirst(_SOURCE_LINKS.verbose_name)}: "

    def kept(items: list) -> list:
        out = []
        for item in items:
            if isinstance(item, list):
                if children := kept(item):
                    out.append(children)
            elif not str(item).startswith(prefix):
                out.append(item)
        return out

    objects = kept(objects)
    counts = {name: n for name, n in counts.items() if name != _SOURCE_LINKS.verbose_name_plural}
    for model, rows in extra or []:
        if rows:
            opts = model._meta
            name = capfirst(opts.verbose_name)
            objects.extend(format_html("{}: {}", name, _link(row)) for row in rows)
            counts[opts.verbose_name_plural] = counts.get(opts.verbose_name_plural, 0) + len(rows)
    return objects, counts, perms_needed, protected


def _user_link(obj) -> str:
    if not obj.user_id:
        return "-"
    return format_html('<a href="{}">{}</a>', user_url(obj.workspace_id, obj.user_id), obj.user_id)


class OwnerFixed(LiveWorkspaces, LargeList):
    """A row's owner (its workspace, its user, what it belongs to) is fixed once it exists:
    moved on the change form, a conversation left its messages, memories and jobs in the
    first workspace and showed up in the other tenant's API, and a user's erasure missed it."""

    owner_fields: tuple[str, ...] = ("workspace", "user_id")

    def get_readonly_fields(self, request, obj=None):
        return (*self.readonly_fields, *(self.owner_fields if obj else ()))


def _client_id(value: str, *, prefix: str = "") -> str:
    """An id a client names the row by (x-conversation-id, x-session-id), by the API's rule:
    set to "has space" in the admin, the row could never be named again; `prefix`, as the
    conversation of a session is named (session:<x-session-id>)."""
    if not is_id(value.removeprefix(prefix) if prefix else value):
        raise forms.ValidationError(f"An id is {ID_RULE}.")
    return value


class MemoryForm(forms.ModelForm):
    """The API's rules for what a memory is: a user id the API can name (or the user could not
    be read, exported or erased there), one of the kinds, and a text no longer than the API
    takes (the admin took 100,000 characters)."""

    kind = forms.ChoiceField(choices=[(kind, kind) for kind in KINDS])
    text = forms.CharField(widget=forms.Textarea, max_length=MEMORY_TEXT_MAX_CHARS)

    class Meta:
        model = Memory
        fields = ("workspace", "user_id", "text", "kind", "event_date", "metadata")

    def clean_user_id(self) -> str:
        value = as_user_id(self.cleaned_data["user_id"])
        if not is_id(value):
            raise forms.ValidationError(f"A user id is {ID_RULE}.")
        return value

    def clean_text(self) -> str:
        # The API's rule (visible_text): zero-width spaces alone were stored here, and every
        # chat turn of the user then read an empty line.
        try:
            return visible_text(self.cleaned_data["text"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_metadata(self):
        value = self.cleaned_data["metadata"]
        problem = engram_metadata_problem(value) if isinstance(value, dict) else None
        if problem:
            raise forms.ValidationError(problem)
        return value


@admin.register(Memory)
class MemoryAdmin(BackToUserPage, DeletionLoggedById, OwnerFixed):
    form = MemoryForm
    list_display = ("__str__", "end_user", "kind", "event_date", "workspace", "updated_at")
    list_filter = (choices_filter("kind", [(kind, kind) for kind in KINDS]), "workspace")
    list_select_related = ("workspace",)
    list_defer = ("embedding", "search", "metadata")
    search_fields = ("user_id", "text", "id")
    fields = (
        "id",
        "workspace",
        "user_id",
        "text",
        "kind",
        "event_date",
        "metadata",
        "created_at",
        "updated_at",
        "source_messages",
        "history",
    )
    readonly_fields = ("id", "created_at", "updated_at", "source_messages", "history")
    actions = ["delete_with_history"]

    @admin.display(description="end user", ordering="user_id")
    def end_user(self, obj):
        return _user_link(obj)

    @admin.display(description="Source messages")
    def source_messages(self, obj):
        if not obj.pk:
            return "-"
        rows = obj.sources.select_related("conversation").order_by("created_at")
        return (
            format_html_join(
                "",
                "<div>{} <small>({}, {})</small></div>",
                (
                    (
                        _link(m, m.content[:100] or m.id),
                        m.conversation.external_id,
                        _when(m.created_at),
                    )
                    for m in rows
                ),
            )
            or "-"
        )

    @admin.display(description="History")
    def history(self, obj):
        if not obj.pk:
            return "-"
        events = MemoryEvent.objects.filter(workspace=obj.workspace, memory_id=obj.pk)
        return (
            format_html_join(
                "",
                "<div><b>{}</b> {} by {}: {} &rarr; {}{}</div>",
                (
                    (
                        e.event,
                        _when(e.created_at),
                        e.actor,
                        e.old_text or "-",
                        e.new_text or "-",
                        _other_changes(e),
                    )
                    for e in events
                ),
            )
            or "-"
        )

    def save_model(self, request, obj, form, change):
        if not change:
            created = services.memory_create(
                workspace=obj.workspace,
                user_id=obj.user_id,
                text=obj.text,
                kind=obj.kind,
                event_date=obj.event_date,
                metadata=obj.metadata,
                actor="admin",
            )
            obj.pk, obj.id = created.pk, created.id
            return
        current = Memory.objects.get(pk=obj.pk)
        services.memory_update(
            workspace=current.workspace,
            memory=current,
            text=obj.text,
            kind=obj.kind,
            event_date=obj.event_date,
            metadata=obj.metadata,
            actor="admin",
            reason=f"edited by {request.user}",
        )

    delete_selected_confirmation_template = "admin/memory/delete_selected_confirmation.html"

    def delete_model(self, request, obj):
        services.memory_delete(
            workspace=obj.workspace, memory=obj, actor="admin", reason=f"deleted by {request.user}"
        )

    def delete_queryset(self, request, queryset):
        for memory in queryset:
            self.delete_model(request, memory)

    def get_deleted_objects(self, objs, request):
        return _without_source_links(super().get_deleted_objects(objs, request))

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # bulk delete would skip the history
        return actions

    @admin.action(
        description="Delete selected memories (recorded in their history)", permissions=["delete"]
    )
    def delete_with_history(self, request, queryset):
        return _confirmed_delete(self, request, queryset, "delete_with_history")


@admin.register(MemoryEvent)
class MemoryEventAdmin(DeletionLoggedById, LargeList):
    list_display = ("__str__", "event", "memory_id", "user_id", "actor", "created_at")
    list_filter = ("event", "actor")
    search_fields = ("memory_id", "user_id", "old_text", "new_text")

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False


# A conversation's page shows its first messages and jobs: a long conversation's thousands made
# a page of thousands of rows.
INLINE_SHOWN = 100
# What a list of messages never shows (vectors, the client's body, the search index).
_MESSAGE_BODY = ("embedding", "context_embedding", "search", "raw", "tool_calls", "metadata")


class MessageInline(admin.TabularInline):
    model = Message
    verbose_name_plural = f"messages (the first {INLINE_SHOWN})"
    extra = 0
    fields = ("role", "name", "content", "created_at", "incomplete", "token_count")
    readonly_fields = fields
    can_delete = False
    show_change_link = True
    ordering = ("created_at", "id")

    def get_queryset(self, request):
        return super().get_queryset(request).defer(*_MESSAGE_BODY)

    def has_add_permission(self, request, obj=None):
        return False


class JobInline(admin.TabularInline):
    model = ProcessingJob
    verbose_name_plural = f"processing jobs (the first {INLINE_SHOWN})"
    ordering = ("created_at", "id")
    extra = 0
    fields = ("kind", "status", "attempts", "error", "upto_message_id", "updated_at")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class ConversationForm(OwnerConstraints):
    """An id by the API's rule, unique for its user in its workspace: another conversation's id
    (the owner read-only, Django skipped the constraint) failed the save with a 500."""

    owner_fields = ("workspace", "user_id")  # read-only on a change form, in the constraint

    class Meta:
        model = Conversation
        fields = "__all__"

    def clean_external_id(self) -> str:
        return _client_id(self.cleaned_data["external_id"], prefix=SESSION_CONVERSATION_PREFIX)


@admin.register(Conversation)
class ConversationAdmin(BackToUserPage, DeletionLoggedById, OwnerFixed):
    form = ConversationForm
    list_display = ("__str__", "end_user", "external_id", "workspace", "updated_at")
    search_fields = ("title", "external_id", "user_id", "id")
    list_filter = ("workspace",)
    list_select_related = ("workspace",)
    readonly_fields = ("id", "end_user", "created_at", "updated_at", "summary_upto", "extraction")
    inlines = [MessageInline, JobInline]
    actions = ["delete_with_derived"]

    @admin.display(description="end user", ordering="user_id")
    def end_user(self, obj):
        return _user_link(obj)

    def get_formset_kwargs(self, request, obj, inline, prefix):
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)
        if obj is not None:  # the first INLINE_SHOWN of the conversation's rows
            rows = kwargs["queryset"]
            first = rows.filter(conversation=obj).order_by(*inline.ordering).values("pk")
            kwargs["queryset"] = rows.filter(pk__in=first[:INLINE_SHOWN])
        return kwargs

    delete_selected_confirmation_template = "admin/memory/delete_selected_confirmation.html"

    def delete_model(self, request, obj):
        # as DELETE /v1/conversations/{id}: the memories derived from it alone go too
        services.conversation_delete(workspace=obj.workspace, conversation=obj, actor="admin")

    def delete_queryset(self, request, queryset):
        for conversation in queryset:
            self.delete_model(request, conversation)

    def get_deleted_objects(self, objs, request):
        # conversation_delete takes the memories derived from them alone: the page says which
        derived = [
            memory
            for conversation in objs
            for memory in services.derived_only_from(
                workspace=conversation.workspace, conversation=conversation
            )
        ]
        return _without_source_links(
            super().get_deleted_objects(objs, request), extra=[(Memory, derived)]
        )

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # a bulk delete would leave its memories behind
        return actions

    @admin.action(
        description="Delete selected conversations (and their memories)", permissions=["delete"]
    )
    def delete_with_derived(self, request, queryset):
        return _confirmed_delete(self, request, queryset, "delete_with_derived")


@admin.register(ProcessingJob)
class ProcessingJobAdmin(LargeList):
    list_display = ("__str__", "kind", "status", "attempts", "short_error", "updated_at")
    list_filter = ("kind", "status")
    search_fields = ("id", "conversation__title", "conversation__external_id")
    list_select_related = ("conversation",)
    readonly_fields = (
        "id",
        "workspace",
        "conversation",
        "kind",
        "status",
        "after_message_id",
        "upto_message_id",
        "attempts",
        "error",
        "created_at",
        "updated_at",
    )

    @admin.display(description="error")
    def short_error(self, obj) -> str:
        return obj.error[:80]

    def has_add_permission(self, request):
        return False  # jobs are made by memory.services.processing, with their task


class SessionForm(OwnerConstraints):
    """A session goes on in a conversation of its own workspace and user: a turn naming the
    session reads and writes the conversation it names (memory.turn.conversation). Its ids
    follow the API's rule, and its id is unique for its user on the change form too."""

    owner_fields = ("workspace", "user_id")  # read-only on a change form, in the constraint

    class Meta:
        model = Session
        fields = ("workspace", "external_id", "user_id", "conversation", "metadata")

    def clean_external_id(self) -> str:
        return _client_id(self.cleaned_data["external_id"])

    def clean_user_id(self) -> str:
        value = as_user_id(self.cleaned_data["user_id"])
        return _client_id(value) if value else value  # a session without a user has ""

    def clean(self):
        data = super().clean() or {}
        conversation, workspace = data.get("conversation"), data.get("workspace")
        if conversation is None or workspace is None:
            return data
        if conversation.workspace_id != workspace.pk:
            self.add_error("conversation", "The conversation belongs to another workspace.")
        elif conversation.user_id != data.get("user_id"):
            self.add_error("conversation", "The conversation belongs to another user.")
        return data


@admin.register(Session)
class SessionAdmin(BackToUserPage, OwnerFixed):
    form = SessionForm
    owner_fields = ("workspace", "user_id", "conversation")

    list_display = ("external_id", "user_id", "conversation", "last_active_at")
    search_fields = ("external_id", "user_id")
    list_select_related = ("conversation",)
    readonly_fields = ("id", "created_at", "last_active_at")
    raw_id_fields = ("conversation",)


def _recalled_line(row) -> str:
    return (row.text if isinstance(row, Memory) else row.content)[:100]


@admin.register(Message)
class MessageAdmin(DeletionLoggedById, LargeList):
    """Read-only: a message's text lives on in its search text, its embeddings and the body
    the client sent (`raw`, which the user's export returns), none of which an edit here
    changed; a "redaction" in this form left the text searchable and exported."""

    list_display = ("__str__", "user_id", "conversation", "created_at", "incomplete")
    list_select_related = ("conversation",)
    list_defer = _MESSAGE_BODY
    list_filter = ("role", "incomplete")
    search_fields = ("user_id", "content", "id", "conversation__external_id")
    readonly_fields = (
        "id",
        "created_at",
        "search_text",
        "token_count",
        "memories_from_here",
        "recalled_for_this_answer",
    )
    exclude = ("embedding", "context_embedding", "recalled")
    raw_id_fields = ("conversation", "session")

    def has_add_permission(self, request):
        return False  # messages come in through the turns and imports, which index them

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="Recalled for this answer")
    def recalled_for_this_answer(self, obj):
        """Which memories and past messages this answer was given, and why: each as it is now
        (a link), or said deleted since."""
        recalled = obj.recalled or []
        found: dict[str, Memory | Message] = {}
        for model, kind in ((Memory, "memory"), (Message, "message")):
            ids = [item["id"] for item in recalled if item.get("type") == kind]
            if ids:
                found |= {
                    row.pk: row
                    for row in model.objects.filter(workspace_id=obj.workspace_id, pk__in=ids)
                }
        return (
            format_html_join(
                "",
                "<div>{} {} <small>({})</small></div>",
                (
                    (
                        item.get("type"),
                        _link(found[item["id"]], _recalled_line(found[item["id"]]))
                        if item.get("id") in found
                        else f"{item.get('id')} (deleted since)",
                        item.get("why", ""),
                    )
                    for item in recalled
                ),
            )
            or "-"
        )

    @admin.display(description="Memories from this message")
    def memories_from_here(self, obj):
        return (
            format_html_join(
                "", "<div>{}</div>", ((_link(m, m.text[:100]),) for m in obj.memories.all())
            )
            or "-"
        )
