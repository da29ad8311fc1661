import os

import django
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")


class BodyLengthHandler(ASGIHandler):
    """Django's ASGI handler, giving a body sent without Content-Length its received length.

    A chunked request (Transfer-Encoding: chunked) has no Content-Length, and DRF and Django's
    multipart parser read a missing one as 0: its body read as empty on every API ("text: This
    field is required.", "No file was submitted."). Under ASGI the body is whole before the
    request is made (read_body spools it), so its length is known; the size limits that read
    CONTENT_LENGTH (DATA_UPLOAD_MAX_MEMORY_SIZE, the upload's) then apply to it too.
    """

    def create_request(self, scope, body_file):
        request, error_response = super().create_request(scope, body_file)
        if request is not None and "CONTENT_LENGTH" not in request.META:
            body_file.seek(0, os.SEEK_END)
            size = body_file.tell()
            body_file.seek(0)
            if size:
                request.META["CONTENT_LENGTH"] = str(size)
        return request, error_response


django.setup(set_prefix=False)  # what get_asgi_application does before making the handler
application = BodyLengthHandler()

from completions.asgi import with_gateway  # noqa: E402 - needs the app registry loaded

application = with_gateway(application)
