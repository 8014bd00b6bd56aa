"""``check --deploy`` covers the security settings added for issue 13: CSP, channel-layer
encryption (login throttling and mail: tests/tenants)."""

from django.core.checks import run_checks


def ids(**_) -> set[str]:
    return {message.id for message in run_checks(include_deployment_checks=True)}


def test_the_shipped_settings_pass(settings):
    assert not {"voiceplatform.W001", "voiceplatform.W002", "voiceplatform.W003"} & ids()


def test_a_missing_or_toothless_policy_is_reported(settings):
    settings.CONTENT_SECURITY_POLICY = {"DIRECTIVES": {"script-src": ["'self'", "'unsafe-inline'"]}}
    assert "voiceplatform.W002" in ids()
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "csp" not in m]
    assert "voiceplatform.W001" in ids()


def test_an_unencrypted_redis_layer_is_reported(settings):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:6379/0"]},
        }
    }
    assert "voiceplatform.W003" in ids()


def test_the_sign_in_checks_are_registered(settings):
    settings.AXES_ENABLED = False
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
    assert {"tenants.W001", "tenants.W002"} <= ids()
