import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.ObjectReader;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.Comparator;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.state.Stores;
import org.apache.kafka.streams.state.WindowStore;

/**
 * The JVM peers of the throughput race (bench/streams.py runs them): Kafka Streams 4.1.1 counting,
 * per campaign (the record key), sends and hard bounces over one hour of record time (CreateTime =
 * event time), and flagging the campaigns that cross the guard's hard-bounce-rate rule (>= 6 % of
 * >= 200 sends) — the same rule as the Quix Streams contender.
 *
 * <ul>
 *   <li>{@code tumbling}: DSL, 1 h tumbling window, no grace, in-memory window store.
 *   <li>{@code hopping}: DSL, 1 h window advancing by 1 min (each record updates 60 windows).
 *   <li>{@code ring}: Processor API, {@link RingProcessor}: 60 one-minute buckets per campaign.
 * </ul>
 *
 * <p>Every record goes through the window and the rule, as in the guard and in Quix's
 * {@code .current()}: the DSL's record cache is off ({@code statestore.cache.max.bytes=0}), so each
 * update reaches the rule at once instead of at the next commit. Streams' defaults otherwise:
 * at-least-once, a changelog topic per window store, one stream thread.
 *
 * <p>Measurement: a progress sample (records, nanoTime, process CPU time of all the JVM's threads
 * from OperatingSystemMXBean) every {@value #SAMPLE_EVERY} records. Done at the expected count or
 * after {@code limit} seconds; then KafkaStreams.close() commits. One line on stdout, {@code
 * BENCH_RESULT {json}}: the samples at the first record, at half the records processed (the end of
 * the warm-up) and at the last, for bench/streams.py to turn into rates.
 *
 * <pre>java -cp ... Race {tumbling|hopping|ring} BOOTSTRAP TOPIC GROUP EXPECT LIMIT_SECONDS STATE_DIR</pre>
 */
public final class Race {
  static final int SAMPLE_EVERY = 1024;
  static final long HOUR_MS = 3_600_000L;
  static final long MINUTE_MS = 60_000L;
  /** The aggregate of a window in one long: sends in the high 32 bits, hard bounces in the low. */
  static final long SENT = 1L << 32;

  static final long HARD = 1L;

  @JsonIgnoreProperties(ignoreUnknown = true)
  public static final class Data {
    public String campaignId;
    public String bounceType;
  }

  /** The envelope's fields the rule needs (Jackson ignores the rest). */
  @JsonIgnoreProperties(ignoreUnknown = true)
  public static final class Envelope {
    public String event;
    public Data data;
  }

  static final ObjectReader READER = new ObjectMapper().readerFor(Envelope.class);

  /** What a record adds to its campaign's counts: SENT, HARD or nothing (and so for garbage). */
  static long delta(byte[] value) {
    try {
      Envelope envelope = READER.readValue(value);
      if ("message.sent".equals(envelope.event)) {
        return SENT;
      }
      if ("message.bounced".equals(envelope.event)
          && envelope.data != null
          && "hard".equals(envelope.data.bounceType)) {
        return HARD;
      }
    } catch (IOException | RuntimeException error) {
      // counted as nothing, as Quix's contender would drop it
    }
    return 0L;
  }

  /** The guard's hard-bounce-rate rule: >= 6 % hard bounces of >= 200 sends. */
  static boolean crosses(long sent, long hard) {
    return sent >= 200 && hard * 100 >= 6 * sent;
  }

  static final com.sun.management.OperatingSystemMXBean OS =
      (com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();

  /** Progress of the one stream thread; read by the main thread once done is counted down. */
  static final class Progress {
    final long expect;
    final long deadline;
    final CountDownLatch done = new CountDownLatch(1);
    final Set<String> alerts = ConcurrentHashMap.newKeySet();
    long count;
    long[] samples = new long[3 * 4096]; // (records, nanoTime, cpu nanos) triples
    int sampled;
    long[] last;

    Progress(long expect, long deadline) {
      this.expect = expect;
      this.deadline = deadline;
    }

    /** Called once per record, before its window update. */
    void record() {
      count++;
      if (count == 1 || count % SAMPLE_EVERY == 0) {
        sample();
        if (System.nanoTime() > deadline && last == null) {
          finish();
        }
      }
      if (count == expect && last == null) {
        finish();
      }
    }

    private void sample() {
      if (sampled + 3 > samples.length) {
        samples = Arrays.copyOf(samples, samples.length * 2);
      }
      samples[sampled++] = count;
      samples[sampled++] = System.nanoTime();
      samples[sampled++] = OS.getProcessCpuTime();
    }

    private void finish() {
      last = new long[] {count, System.nanoTime(), OS.getProcessCpuTime()};
      done.countDown();
    }

    /** The first sample at or past half the records processed: where the warm-up ends. */
    long[] half() {
      for (int i = 0; i < sampled; i += 3) {
        if (samples[i] * 2 >= last[0]) {
          return Arrays.copyOfRange(samples, i, i + 3);
        }
      }
      return last;
    }
  }

  static void dsl(StreamsBuilder builder, String topic, TimeWindows windows, Progress progress) {
    Duration retention = Duration.ofMillis(windows.size() + windows.gracePeriodMs());
    Materialized<String, Long, WindowStore<Bytes, byte[]>> store =
        Materialized.<String, Long>as(
                Stores.inMemoryWindowStore("counts", retention, Duration.ofMillis(windows.size()), false))
            .withKeySerde(Serdes.String())
            .withValueSerde(Serdes.Long())
            .withCachingDisabled();
    KStream<String, byte[]> events =
        builder.stream(topic, Consumed.with(Serdes.String(), Serdes.ByteArray()));
    events
        .peek((key, value) -> progress.record())
        .mapValues(Race::delta)
        .groupByKey(Grouped.with(Serdes.String(), Serdes.Long()))
        .windowedBy(windows)
        .reduce(Long::sum, store)
        .toStream()
        .filter((window, counts) -> crosses(counts >>> 32, counts & 0xFFFFFFFFL))
        .foreach((window, counts) -> progress.alerts.add(window.key()));
  }

  public static void main(String[] args) throws Exception {
    long started = System.nanoTime();
    String mode = args[0];
    String bootstrap = args[1];
    String topic = args[2];
    String group = args[3];
    long expect = Long.parseLong(args[4]);
    double limit = Double.parseDouble(args[5]);
    Path stateDir = Path.of(args[6]);
    long deadline = started + (long) (Math.min(limit, 1e6) * 1e9);
    Progress progress = new Progress(expect, deadline);

    StreamsBuilder builder = new StreamsBuilder();
    switch (mode) {
      case "tumbling" -> dsl(builder, topic, TimeWindows.ofSizeWithNoGrace(Duration.ofMillis(HOUR_MS)), progress);
      case "hopping" -> dsl(
          builder,
          topic,
          TimeWindows.ofSizeWithNoGrace(Duration.ofMillis(HOUR_MS)).advanceBy(Duration.ofMillis(MINUTE_MS)),
          progress);
      case "ring" -> builder.stream(topic, Consumed.with(Serdes.String(), Serdes.ByteArray()))
          .process(() -> new RingProcessor(progress));
      default -> throw new IllegalArgumentException("unknown mode " + mode);
    }

    Properties config = new Properties();
    config.put(StreamsConfig.APPLICATION_ID_CONFIG, group);
    config.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    config.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
    config.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
    config.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
    config.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");
    // Tansu holds each JoinGroup reply for half the session timeout; 6 s is also Apache Kafka's
    // smallest by default (group.min.session.timeout.ms)
    config.put(StreamsConfig.consumerPrefix("session.timeout.ms"), 6000);
    config.put(StreamsConfig.consumerPrefix("heartbeat.interval.ms"), 1000);

    KafkaStreams streams = new KafkaStreams(builder.build(), config);
    streams.setUncaughtExceptionHandler(
        error -> {
          error.printStackTrace();
          progress.done.countDown();
          return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse
              .SHUTDOWN_CLIENT;
        });
    streams.start();
    try {
      progress.done.await((long) (Math.min(limit, 1e6) + 600), TimeUnit.SECONDS);
    } finally {
      streams.close(Duration.ofSeconds(60)); // commits the offsets of what was processed
      try (Stream<Path> paths = Files.walk(stateDir)) {
        paths.sorted(Comparator.reverseOrder()).forEach(path -> path.toFile().delete());
      }
    }
    long committed = System.nanoTime();
    if (progress.last == null) {
      throw new IllegalStateException("stopped after " + progress.count + " of " + expect + " records");
    }
    long[] first = Arrays.copyOfRange(progress.samples, 0, 3);
    long[] half = progress.half();
    System.out.println(
        "BENCH_RESULT {\"mode\": \"" + mode + "\", \"expect\": " + expect
            + ", \"started_ns\": " + started
            + ", \"first\": " + Arrays.toString(first)
            + ", \"half\": " + Arrays.toString(half)
            + ", \"done\": " + Arrays.toString(progress.last)
            + ", \"committed_ns\": " + committed
            + ", \"campaigns_over_threshold\": " + progress.alerts.size() + "}");
    System.out.flush();
    System.exit(0); // a stray non-daemon thread must not keep the JVM past its answer
  }
}
