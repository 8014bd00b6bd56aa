from django.apps import AppConfig


class VoicePlatformConfig(AppConfig):
    name = "voiceplatform"

    def ready(self) -> None:
        from voiceplatform import checks  # noqa: F401 - registers the deployment checks
