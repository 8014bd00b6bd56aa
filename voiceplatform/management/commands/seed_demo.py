import json as json_module
import os

from django.core.management.base import BaseCommand

from voiceplatform.demo import DEMO_ORIGINS, demo_origins, demo_seed


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
        parser.add_argument(
            "--port",
            type=int,
            default=int(os.environ.get("PORT") or 8000),
            help="The port the platform runs on (default: $PORT, else 8000): the demo widget "
            "key allows http://127.0.0.1:<port> and http://localhost:<port>.",
        )

    def handle(self, *args, json: bool = False, origins=None, port: int = 8000, **options):
        wanted = DEMO_ORIGINS + [o for o in demo_origins(port) if o not in DEMO_ORIGINS]
        seed = demo_seed(origins=wanted + (origins or []))
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
