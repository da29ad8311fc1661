from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path, register_converter
from django.views.generic.base import RedirectView
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularSwaggerView,
)

from completions.usage_api import metrics_view
from config.common import health
from config.common.ids import PathIdConverter, PathUserIdConverter
from config.playground.views import playground

register_converter(PathIdConverter, "id")  # every id in a path: config.common.ids' one rule
register_converter(PathUserIdConverter, "user")  # a user id: `|` read as `:`

handler400 = "config.common.errors.handler400"
handler403 = "config.common.errors.handler403"
# config.common.errors.handler404, which names the Chat Completions API to a client of OpenAI's
# Responses or legacy Completions API
handler404 = "completions.apis.handler404"
handler500 = "config.common.errors.handler500"

api_patterns = [
    path("", include("accounts.urls")),
    path("", include("accounts.endusers.urls")),
    path("", include("completions.urls")),
    path("", include("completions.agents.urls")),
    path("", include("completions.tools.urls")),
    path("", include("memory.urls")),
    path("", include("memory.knowledge.urls")),
]

urlpatterns = [
    path("healthz", health.healthz),
    path("metrics", metrics_view),
    path("readyz", health.readyz),
    path("admin", RedirectView.as_view(url="/admin/")),
    path("admin/", admin.site.urls),
    # No icon: "nothing", so the browser's request for one is not an error in every console.
    path("favicon.ico", lambda request: HttpResponse(status=204)),
    path("playground", playground, name="playground"),
    # Public, like the health checks (accounts.middleware.PUBLIC_PREFIXES).
    path("v1/schema", SpectacularAPIView.as_view(), name="schema"),
    # GET and HEAD only: DRF answers OPTIONS with the view's metadata through its renderer,
    # here an HTML one with no template for it (a 500 to anyone, without a key).
    path(
        "docs",
        SpectacularSwaggerView.as_view(url_name="schema", http_method_names=["get", "head"]),
        name="docs",
    ),
    path("v1/", include(api_patterns)),
    path("api/v1/", include(api_patterns)),
]
