"""Operators sign in to the admin with their email (`ensuredemo` makes the email the username;
`createsuperuser` may not), so the login form's "Email" is true either way."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend


class EmailBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is not None or not username or password is None:
            return user
        matches = list(get_user_model()._default_manager.filter(email__iexact=username)[:2])
        if len(matches) != 1:
            return None  # an email two accounts share signs in neither
        user = matches[0]
        if user.check_password(password) and self.user_can_authenticate(user):
            return user
        return None
