from django.db.models import QuerySet

from accounts.endusers.models import Issuer
from accounts.models import Workspace


def issuers_for(*, iss: str) -> QuerySet[Issuer]:
    """Every workspace's issuer with this `iss` (token verification: the token names no
    workspace yet)."""
    return Issuer.objects.select_related("workspace").filter(issuer=iss)


def issuer_list(*, workspace: Workspace) -> QuerySet[Issuer]:
    return Issuer.objects.filter(workspace=workspace).order_by("created_at")


def issuer_get(*, workspace: Workspace, issuer_id: str) -> Issuer:
    return Issuer.objects.get(workspace=workspace, id=issuer_id)
