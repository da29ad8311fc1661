from django.contrib.admin.apps import AdminConfig


class EngramAdminConfig(AdminConfig):
    """django.contrib.admin with Engram's site (config.admin.EngramAdminSite) as `admin.site`."""

    default_site = "config.admin.EngramAdminSite"
