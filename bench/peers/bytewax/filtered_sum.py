"""The original demo's `filtered_sum` job on bytewax 0.21.1: the peer marketflow's `streams` replaces.

The dataflow is the demo's, operator for operator: Kafka in (`kop.input`), decode, drop listings
priced over 1,000,000 KRW, key every record on one constant key, a running sum in a
`StatefulBatchLogic`, one output record per batch with the sum so far, Kafka out (`KafkaSink`).
What differs from the demo, and why:

- Decoding goes through the schema registry (Confluent wire format, confluent-kafka's
  `AvroDeserializer` on fastavro), because that is how the listings topic is written now; the demo
  decoded schemaless Avro. Keys are decoded too, as the demo did.
- A listing with no price (null in the contract) is dropped, as marketflow does; the demo's
  `price > 1000000` would raise on it.
- The output value is the demo's Avro record `{"accum_price": string}` in Confluent wire format,
  its schema registered under `<OUTPUT>-value` (`AvroSerializer`); the key is null, as in the demo.
- The demo logged every record at INFO; those lines are left out, so that the benchmark measures
  the stream and not a log.
- The input reads from the beginning of the topic (the demo resumed from stored offsets) and
  uses bytewax's default batch size, 1000 (the demo's was 10); `BATCH_SIZE` sets it.

Environment: BOOTSTRAP, REGISTRY_URL, INPUT, OUTPUT, GROUP_ID, BATCH_SIZE, MAX_PRICE. It runs
until stopped (SIGINT or SIGTERM), one worker in this process (`run_main`), as the demo did.
"""

import os
import sys

from confluent_kafka import OFFSET_BEGINNING
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from bytewax import operators as op
from bytewax.connectors.kafka import KafkaSink as KSink
from bytewax.connectors.kafka import KafkaSinkMessage as KSinkMsg
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic
from bytewax._bytewax import run_main

BOOTSTRAP = os.environ.get("BOOTSTRAP", "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094")
REGISTRY_URL = os.environ.get("REGISTRY_URL", "http://127.0.0.1:18081")
INPUT = os.environ.get("INPUT", "listings")
OUTPUT = os.environ.get("OUTPUT", "listings-filtered-sum")
GROUP_ID = os.environ.get("GROUP_ID", "bytewax-filtered-sum")
BATCH_SIZE = int(os.environ.get("BATCH_SIZE", "1000"))
MAX_PRICE = int(os.environ.get("MAX_PRICE", "1000000"))

# The demo's output record.
ACCUM_SCHEMA = """{
  "name": "product_filtered_by_outlier_price",
  "type": "record",
  "fields": [{"name": "accum_price", "type": "string"}]
}"""

registry = SchemaRegistryClient({"url": REGISTRY_URL})
decode_avro = AvroDeserializer(registry)
encode_accum = AvroSerializer(registry, ACCUM_SCHEMA)
key_context = SerializationContext(INPUT, MessageField.KEY)
value_context = SerializationContext(INPUT, MessageField.VALUE)
out_context = SerializationContext(OUTPUT, MessageField.VALUE)


def decode_product(message):
    # bytewax wants string keys downstream, as the demo noted.
    key = str(decode_avro(message.key, key_context)["product_id"])
    product = decode_avro(message.value, value_context)
    return key, product


def filter_price(message):
    _, value = message
    price = value["price"]
    return price is not None and price <= MAX_PRICE


class SumLogic(StatefulBatchLogic):
    def __init__(self):
        self.sum = 0

    def on_batch(self, batch):
        for event in batch:
            key, value = event
            self.sum += value["price"]
        return [(key, self.sum)], False

    def snapshot(self):
        return self.sum

    def restore(self, snapshot):
        self.sum = snapshot


def to_ksink_msg(message):
    _, key_to_price = message
    _, accum_price = key_to_price
    return KSinkMsg(None, encode_accum({"accum_price": str(accum_price)}, out_context))


def build_data_flow():
    flow = Dataflow("product-filter-streams")
    kin = kop.input(
        "product-in",
        flow,
        brokers=[BOOTSTRAP],
        starting_offset=OFFSET_BEGINNING,
        batch_size=BATCH_SIZE,
        topics=[INPUT],
        add_config={"group.id": GROUP_ID, "enable.auto.commit": "true"},
    )
    op.inspect("inspect_err", kin.errs).then(op.raises, "raise_errors")
    decoded = op.map("decode_product", kin.oks, decode_product)
    filtered = op.filter("filter_price", decoded, filter_price)
    key_on = op.key_on("batch_grouping", filtered, lambda _: "unique-each-batch")
    summed = op.stateful_batch("accum_price_batch", key_on, lambda _: SumLogic())
    to_sink_msg = op.map("to_sink_msg", summed, to_ksink_msg)
    op.output("product-filtered-sum-out", to_sink_msg, KSink([BOOTSTRAP], OUTPUT))
    return flow


if __name__ == "__main__":
    try:
        run_main(build_data_flow())
    except KeyboardInterrupt:
        sys.exit(0)
