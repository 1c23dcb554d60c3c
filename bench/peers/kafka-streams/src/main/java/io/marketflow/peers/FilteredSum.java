package io.marketflow.peers;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * marketflow's streams job as a Kafka Streams application: drop listings priced over the limit
 * (or with no price), keep the global sum and count of the rest, write it to a topic.
 *
 * <p>Under {@code distinct} (marketflow's default semantics) a product counts once, in its latest
 * version: the listings become a table keyed by product (a newer version replaces the old one's
 * price, a dropped version or a tombstone removes it), grouped to the one key {@code all} and
 * aggregated with an adder and a subtractor. Under {@code append} every accepted record counts:
 * filter, group to {@code all}, aggregate. Both are the idiomatic DSL for the job; the grouping
 * repartitions through an internal topic, as Kafka Streams does for any re-keyed aggregate.
 *
 * <p>Input: the listings topic in Confluent's wire format (magic byte 0, a 4-byte schema id, Avro
 * binary). The writer's schema comes from the registry, once per id; the reader's schema projects
 * the one field the job needs, {@code price}, so Avro skips the rest. Output: key {@code all}
 * (string), value JSON {@code {"count":N,"sum":S}}, each time the sum changes and the record
 * cache flushes (every commit).
 *
 * <p>Settings come from the environment: {@code BOOTSTRAP}, {@code REGISTRY_URL}, {@code INPUT},
 * {@code OUTPUT}, {@code APPLICATION_ID}, {@code GUARANTEE} ({@code at_least_once} or
 * {@code exactly_once_v2}), {@code SEMANTICS} ({@code distinct} or {@code append}),
 * {@code MAX_PRICE} (1000000), {@code COMMIT_INTERVAL_MS} (500, marketflow's commit_interval),
 * {@code THREADS} (1), {@code STATE_DIR}. It runs until SIGTERM.
 */
public final class FilteredSum {
  private FilteredSum() {}

  /** Reader schema: the listing's price only (io.marketflow.listing.Listing, projected). */
  private static final Schema PRICE_ONLY =
      new Schema.Parser()
          .parse(
              "{\"type\":\"record\",\"name\":\"Listing\",\"namespace\":\"io.marketflow.listing\","
                  + "\"fields\":[{\"name\":\"price\",\"type\":[\"null\",\"long\"],"
                  + "\"default\":null}]}");

  /** Decodes the price of a Confluent-framed Avro listing, with writer schemas from the registry. */
  static final class PriceDecoder {
    private final String registry;
    private final HttpClient http = HttpClient.newHttpClient();
    private final ObjectMapper json = new ObjectMapper();
    private final Map<Integer, GenericDatumReader<GenericRecord>> readers =
        new ConcurrentHashMap<>();
    private final ThreadLocal<BinaryDecoder> decoder = new ThreadLocal<>();

    PriceDecoder(String registry) {
      this.registry = registry.replaceAll("/+$", "");
    }

    /** The listing's price, or null for a tombstone, a listing without a price, or bad bytes. */
    Long price(byte[] value) {
      if (value == null || value.length < 5 || value[0] != 0) {
        return null;
      }
      int id = ByteBuffer.wrap(value, 1, 4).getInt();
      GenericDatumReader<GenericRecord> reader = readers.computeIfAbsent(id, this::fetch);
      BinaryDecoder in =
          DecoderFactory.get().binaryDecoder(value, 5, value.length - 5, decoder.get());
      decoder.set(in);
      try {
        Object price = reader.read(null, in).get("price");
        return price == null ? null : (Long) price;
      } catch (IOException | RuntimeException e) {
        return null;
      }
    }

    private GenericDatumReader<GenericRecord> fetch(int id) {
      URI uri = URI.create(registry + "/schemas/ids/" + id);
      try {
        HttpResponse<String> response =
            http.send(
                HttpRequest.newBuilder(uri).timeout(Duration.ofSeconds(10)).build(),
                HttpResponse.BodyHandlers.ofString());
        if (response.statusCode() != 200) {
          throw new IllegalStateException(
              "schema id " + id + ": " + uri + " answered " + response.statusCode());
        }
        JsonNode body = json.readTree(response.body());
        Schema writer = new Schema.Parser().parse(body.get("schema").asText());
        return new GenericDatumReader<>(writer, PRICE_ONLY);
      } catch (IOException e) {
        throw new IllegalStateException("schema id " + id + ": " + uri + " failed: " + e, e);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new IllegalStateException("schema id " + id + ": interrupted", e);
      }
    }
  }

  /** A running count and sum, 16 bytes in the stores. */
  record Sum(long count, long sum) {
    static final Sum ZERO = new Sum(0, 0);

    Sum add(long price) {
      return new Sum(count + 1, sum + price);
    }

    Sum subtract(long price) {
      return new Sum(count - 1, sum - price);
    }

    String toJson() {
      return "{\"count\":" + count + ",\"sum\":" + sum + "}";
    }

    static final Serde<Sum> SERDE =
        Serdes.serdeFrom(
            (topic, s) -> s == null ? null : ByteBuffer.allocate(16).putLong(s.count).putLong(s.sum).array(),
            (topic, b) -> {
              if (b == null) {
                return null;
              }
              ByteBuffer buffer = ByteBuffer.wrap(b);
              return new Sum(buffer.getLong(), buffer.getLong());
            });
  }

  static String env(String name, String fallback) {
    String value = System.getenv(name);
    if (value != null && !value.isEmpty()) {
      return value;
    }
    if (fallback == null) {
      throw new IllegalArgumentException("set " + name + " (see FilteredSum's doc comment)");
    }
    return fallback;
  }

  public static void main(String[] args) throws InterruptedException {
    String output = env("OUTPUT", null);
    String semantics = env("SEMANTICS", "distinct");
    long maxPrice = Long.parseLong(env("MAX_PRICE", "1000000"));
    PriceDecoder decoder = new PriceDecoder(env("REGISTRY_URL", "http://127.0.0.1:18081"));

    StreamsBuilder builder = new StreamsBuilder();
    KStream<Bytes, Long> accepted =
        builder.stream(env("INPUT", null), Consumed.with(Serdes.Bytes(), Serdes.ByteArray()))
            .mapValues(
                value -> {
                  Long price = decoder.price(value);
                  return price != null && price <= maxPrice ? price : null;
                });
    Grouped<String, Long> toAll = Grouped.with("all", Serdes.String(), Serdes.Long());
    KTable<String, Sum> sums;
    switch (semantics) {
      case "distinct" -> {
        KTable<Bytes, Long> products =
            accepted.toTable(
                Materialized.<Bytes, Long, KeyValueStore<Bytes, byte[]>>as(
                        "products")
                    .withKeySerde(Serdes.Bytes())
                    .withValueSerde(Serdes.Long()));
        sums =
            products
                .groupBy((product, price) -> KeyValue.pair("all", price), toAll)
                .aggregate(
                    () -> Sum.ZERO,
                    (all, price, sum) -> sum.add(price),
                    (all, price, sum) -> sum.subtract(price),
                    Materialized.<String, Sum, KeyValueStore<Bytes, byte[]>>as("sums")
                        .withKeySerde(Serdes.String())
                        .withValueSerde(Sum.SERDE));
      }
      case "append" ->
          sums =
              accepted
                  .filter((product, price) -> price != null)
                  .groupBy((product, price) -> "all", toAll)
                  .aggregate(
                      () -> Sum.ZERO,
                      (all, price, sum) -> sum.add(price),
                      Materialized.<String, Sum, KeyValueStore<Bytes, byte[]>>as("sums")
                        .withKeySerde(Serdes.String())
                        .withValueSerde(Sum.SERDE));
      default -> throw new IllegalArgumentException(
          "SEMANTICS must be distinct or append, not " + semantics);
    }
    sums.toStream()
        .mapValues(Sum::toJson)
        .to(output, Produced.with(Serdes.String(), Serdes.String()));

    String applicationId = env("APPLICATION_ID", null);
    Properties props = new Properties();
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, applicationId);
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG,
        env("BOOTSTRAP", "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"));
    props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, env("GUARANTEE", "at_least_once"));
    props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, env("COMMIT_INTERVAL_MS", "500"));
    props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, env("THREADS", "1"));
    props.put(StreamsConfig.STATE_DIR_CONFIG,
        env("STATE_DIR", Path.of(System.getProperty("java.io.tmpdir"), "kafka-streams").toString()));
    props.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");

    KafkaStreams streams = new KafkaStreams(builder.build(), props);
    CountDownLatch stopped = new CountDownLatch(1);
    int[] exit = {0};
    streams.setUncaughtExceptionHandler(
        e -> {
          System.err.println("kafka-streams: " + applicationId + " failed: " + e);
          exit[0] = 1;
          stopped.countDown();
          return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
    Runtime.getRuntime().addShutdownHook(new Thread(stopped::countDown));
    streams.start();
    stopped.await();
    streams.close(Duration.ofSeconds(30));
    if (exit[0] != 0) {
      Runtime.getRuntime().halt(exit[0]);
    }
  }
}
