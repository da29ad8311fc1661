"""The admin's "Are you sure?" page for rows that own many others (a workspace, a collection,
a document): counts of what goes with them, not every row. Django's page listed each related
row, loading all of them (every document's uploaded bytes, every chunk's embedding) to print
their names: a workspace or a collection of some size timed the page out."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.db.models import Model, QuerySet

from config.admin_save import RefusalsOnTheForm

# (model, its rows that go with the deleted objects)
Owned = Callable[[QuerySet], Iterable[tuple[type[Model], QuerySet]]]


class CountsOnDelete(RefusalsOnTheForm):
    owned: Owned

    def get_deleted_objects(self, objs, request):
        objs = list(objs)
        model = self.model
        selected = model._default_manager.filter(pk__in=[obj.pk for obj in objs])
        to_delete: list[str] = [str(obj) for obj in objs]
        counts: dict[str, int] = {str(model._meta.verbose_name_plural): len(objs)}
        perms_needed: set[str] = set()
        for related, rows in type(self).owned(selected):
            n = rows.count()
            if not n:
                continue
            meta = related._meta
            counts[str(meta.verbose_name_plural)] = n
            to_delete.append(f"{n} {meta.verbose_name_plural}")
            if not request.user.has_perm(f"{meta.app_label}.delete_{meta.model_name}"):
                perms_needed.add(str(meta.verbose_name_plural))
        return to_delete, counts, perms_needed, []
