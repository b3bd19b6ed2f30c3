"""The device from the article (shared/seeds/000_75d6a392bae14cdb.txt, "Python Device Client"),
as printed there. The client is created exactly as the article creates it, on the SDK's
default transport (MQTT over TLS on port 8883); the hub's test CA is trusted through
SSL_CERT_FILE, as an operator trusts a private CA. The one addition is `from datetime import
datetime` (the article uses `datetime` without importing it).

tests/python/test_device_sdk.py drives it, over 8883 and (with the client swapped for one made
with `websockets=True`) over MQTT-over-WebSocket on 443.
"""

import asyncio
import json
from datetime import datetime

from azure.iot.device import MethodResponse  # noqa: F401  (imported by the article)
from azure.iot.device.aio import IoTHubDeviceClient

class IoTDevice:
    def __init__(self, connection_string):
        self.client = IoTHubDeviceClient.create_from_connection_string(connection_string)
        self.current_config = {
            'telemetryInterval': 60,
            'temperatureThreshold': 25
        }

    async def connect(self):
        await self.client.connect()

        # Set up handlers
        self.client.on_twin_desired_properties_patch_received = self.handle_twin_patch

        # Get initial twin
        twin = await self.client.get_twin()
        await self.apply_desired_properties(twin['desired'])

    async def handle_twin_patch(self, patch):
        """Handle desired property updates from backend."""
        print(f"Received twin patch: {patch}")
        await self.apply_desired_properties(patch)

    async def apply_desired_properties(self, desired):
        """Apply configuration changes and report back."""
        changes_applied = {}

        if 'telemetryInterval' in desired:
            self.current_config['telemetryInterval'] = desired['telemetryInterval']
            changes_applied['telemetryInterval'] = desired['telemetryInterval']

        if 'temperatureThreshold' in desired:
            self.current_config['temperatureThreshold'] = desired['temperatureThreshold']
            changes_applied['temperatureThreshold'] = desired['temperatureThreshold']

        if 'firmwareVersion' in desired:
            # Simulate firmware update
            new_version = desired['firmwareVersion']
            changes_applied['firmwareUpdateStatus'] = 'downloading'
            await self.report_properties(changes_applied)

            # Simulate update process
            await asyncio.sleep(5)
            changes_applied['firmwareVersion'] = new_version
            changes_applied['firmwareUpdateStatus'] = 'completed'
            changes_applied['lastFirmwareUpdate'] = datetime.utcnow().isoformat()

        await self.report_properties(changes_applied)

    async def report_properties(self, properties):
        """Report device state to IoT Hub."""
        reported_patch = properties
        await self.client.patch_twin_reported_properties(reported_patch)
        print(f"Reported properties: {reported_patch}")

    async def send_telemetry_loop(self):
        """Send telemetry at configured interval."""
        import random

        while True:
            temperature = 20 + random.random() * 10
            humidity = 40 + random.random() * 20

            telemetry = {
                'temperature': temperature,
                'humidity': humidity,
                'timestamp': datetime.utcnow().isoformat()
            }

            # Check threshold
            if temperature > self.current_config['temperatureThreshold']:
                telemetry['alert'] = 'high_temperature'

            await self.client.send_message(json.dumps(telemetry))
            print(f"Sent telemetry: {telemetry}")

            # Report connectivity status periodically
            await self.report_properties({
                'connectivity': {
                    'type': 'wifi',
                    'lastConnected': datetime.utcnow().isoformat()
                }
            })

            await asyncio.sleep(self.current_config['telemetryInterval'])

    async def run(self):
        await self.connect()
        await self.send_telemetry_loop()
