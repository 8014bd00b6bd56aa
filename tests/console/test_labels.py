"""Field labels say acronyms as people write them ("VAD eagerness", "URL", not "Vad", "Url")."""

from __future__ import annotations

import importlib
import inspect

import pytest
from django import forms
from django.forms.utils import pretty_name

FORM_MODULES = (
    "agents.forms", "agents.webhook_forms", "agents.telephony_views", "tenants.forms",
    "tenants.auth",
)  # fmt: skip
ACRONYMS = {"url", "vad", "api", "mcp", "id", "json", "csv", "pdf", "pii", "http", "https", "sip"}


def console_form_fields():
    for module_name in FORM_MODULES:
        module = importlib.import_module(module_name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, forms.BaseForm) and cls.__module__ == module_name:
                for field_name in cls.base_fields:
                    yield f"{name}.{field_name}", cls, field_name


@pytest.mark.parametrize(("where", "form_class", "field_name"), list(console_form_fields()))
def test_acronyms_in_labels_are_upper_case(where, form_class, field_name, db):
    field = form_class.base_fields[field_name]
    label = str(field.label or pretty_name(field_name))
    for word in label.replace("(", " ").replace(")", " ").split():
        if word.lower() in ACRONYMS:
            assert word == word.upper(), f"{where}: {label!r}"


def test_the_agent_form_says_vad_eagerness(client, world):
    client.force_login(world.owner_a)
    page = client.get("/t/tenant-a/agents/new/").content.decode()
    assert ">VAD eagerness</label>" in page and "Vad eagerness" not in page
    tools_form = importlib.import_module("agents.forms")
    assert tools_form.McpServerForm.base_fields["url"].label == "URL"
    assert tools_form.FunctionToolForm.base_fields["webhook_url"].label == "Webhook URL"
