from django.urls import path

from accounts.endusers import apis

urlpatterns = [
    path("auth/issuers", apis.IssuerListCreateApi.as_view()),
    path("auth/issuers/<id:issuer_id>", apis.IssuerDetailApi.as_view()),
]
