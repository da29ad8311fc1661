from django.urls import path

from completions.agents import apis

urlpatterns = [
    path("agents", apis.AgentListCreateApi.as_view()),
    path("agents/<id:agent_id>", apis.AgentDetailApi.as_view()),
    path("agents/<id:agent_id>/versions", apis.AgentVersionListApi.as_view()),
]
