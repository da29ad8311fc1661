from django.apps import AppConfig


class PlaygroundConfig(AppConfig):
    name = "config.playground"
    label = "playground"
    verbose_name = "Playground"
