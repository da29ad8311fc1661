from django.urls import path

from completions.tools import apis

urlpatterns = [
    path("agents/<id:agent_id>/tools", apis.ToolListCreateApi.as_view()),
    path("agents/<id:agent_id>/tools/<id:tool_id>", apis.ToolDetailApi.as_view()),
    path("executions", apis.ExecutionListApi.as_view()),
    path("executions/<id:execution_id>", apis.ExecutionDetailApi.as_view()),
    path("approvals", apis.ApprovalListApi.as_view()),
    path("chat/resume", apis.chat_resume),
]
