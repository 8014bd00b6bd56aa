import pytest

from tenants.origins import InvalidOrigin, origin_is_allowed, origin_normalize


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://shop.example.com", "https://shop.example.com"),
        ("HTTPS://Shop.Example.COM:443", "https://shop.example.com"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://localhost:80/", "http://localhost"),
        ("https://shop.example.com:8443", "https://shop.example.com:8443"),
        ("http://[::1]:8000", "http://[::1]:8000"),
    ],
)
def test_normalize(value, expected):
    assert origin_normalize(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "shop.example.com",
        "ftp://shop.example.com",
        "https://shop.example.com/widget",
        "https://*.example.com",
        "https://user:pw@shop.example.com",
        "https://shop.example.com?x=1",
        "https://shop.example.com:99999",
        "null",
    ],
)
def test_invalid_origins_are_refused(value):
    with pytest.raises(InvalidOrigin):
        origin_normalize(value)


def test_allowed_is_exact_on_scheme_host_and_port():
    allowed = ["https://shop.example.com", "http://127.0.0.1:8000"]
    assert origin_is_allowed("https://shop.example.com", allowed)
    assert origin_is_allowed("http://127.0.0.1:8000", allowed)
    assert not origin_is_allowed("http://shop.example.com", allowed)
    assert not origin_is_allowed("https://shop.example.com:8443", allowed)
    assert not origin_is_allowed("https://evil.shop.example.com", allowed)
    assert not origin_is_allowed("http://127.0.0.1:8001", allowed)
    assert not origin_is_allowed(None, allowed)
    assert not origin_is_allowed("null", allowed)
