import json as json_module

from django.core.management.base import BaseCommand

from voiceplatform.demo import DEMO_ORIGINS, demo_seed


class Command(BaseCommand):
    help = "Create or refresh the demo tenant, its owner, an agent, a widget key and an API key."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")
        parser.add_argument(
            "--origin",
            action="append",
            dest="origins",
            help="An extra allowed origin for the demo widget key (repeatable).",
        )

    def handle(self, *args, json: bool = False, origins=None, **options):
        seed = demo_seed(origins=DEMO_ORIGINS + (origins or []))
        if json:
            self.stdout.write(json_module.dumps(seed.as_dict()))
            return
        self.stdout.write(
            f"Demo tenant '{seed.tenant}' is ready.\n"
            f"  Log in:     {seed.username} / {seed.password}\n"
            f"  Agent id:   {seed.agent_id}\n"
            f"  Widget key: {seed.widget_key}\n"
            f"  API key:    {seed.api_key} (new on every run)"
        )
