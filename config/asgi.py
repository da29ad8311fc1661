import os
import tempfile

import django
from django.conf import settings
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

    async def read_body(self, receive):
        """Django's, stopped once the body passes ENGRAM_MAX_REQUEST_BYTES (every route's
        limit, uploads' included): Django spooled a body of any size to a temporary file
        before any limit was read, so one request could fill the disk."""
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if limit is not None and received > limit:
                raise _BodyTooLarge
            return message

        try:
            return await super().read_body(counted)
        except _BodyTooLarge:
            return _TooLargeBody()

    def create_request(self, scope, body_file):
        if isinstance(body_file, _TooLargeBody):
            from config.common.errors import error_response

            refused = error_response(413, "Request body too large.", code="request_too_large")
            return None, refused
        request, error_response = super().create_request(scope, body_file)
        if request is not None and "CONTENT_LENGTH" not in request.META:
            body_file.seek(0, os.SEEK_END)
            size = body_file.tell()
            body_file.seek(0)
            if size:
                request.META["CONTENT_LENGTH"] = str(size)
        return request, error_response


class _BodyTooLarge(Exception):
    pass


class _TooLargeBody(tempfile.SpooledTemporaryFile):
    """The body read_body stopped reading: create_request answers 413 for it."""


django.setup(set_prefix=False)  # what get_asgi_application does before making the handler
application = BodyLengthHandler()

from completions.asgi import with_gateway  # noqa: E402 - needs the app registry loaded

application = with_gateway(application)
