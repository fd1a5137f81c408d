import java.util.HashMap;
import java.util.Map;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.Record;

/**
 * The JVM team's best at the guard's sliding hour: per campaign a ring of 60 one-minute buckets
 * (sends, hard bounces) with running totals, advanced by record time; each record updates one bucket
 * and evaluates the rate rule over the last 60 minutes, O(1) per record.
 *
 * <p>The rings live in a plain {@link HashMap} of the processor (one instance per task, i.e. per
 * partition), not in a state store: no serialization per record and no changelog, which is what a
 * team writes for speed, and the same durability as the guard in this race (checkpoints off). A
 * KeyValueStore would add a serde round trip of the ring and a changelog record per event.
 */
final class RingProcessor implements Processor<String, byte[], Void, Void> {
  static final int BUCKETS = 60;

  static final class Ring {
    final long[] minute = new long[BUCKETS];
    final int[] sent = new int[BUCKETS];
    final int[] hard = new int[BUCKETS];
    long head = Long.MIN_VALUE; // the latest minute seen
    long totalSent;
    long totalHard;

    /** Adds a record of minute {@code at}; false when it is older than the window. */
    boolean add(long at, long delta) {
      if (head == Long.MIN_VALUE) {
        head = at;
      }
      if (at > head) {
        // expire the buckets the window leaves behind (at most all 60)
        for (long m = Math.max(head + 1, at - BUCKETS + 1); m <= at; m++) {
          int slot = (int) Math.floorMod(m, BUCKETS);
          totalSent -= sent[slot];
          totalHard -= hard[slot];
          sent[slot] = 0;
          hard[slot] = 0;
          minute[slot] = m;
        }
        head = at;
      } else if (at <= head - BUCKETS) {
        return false;
      }
      int slot = (int) Math.floorMod(at, BUCKETS);
      if (minute[slot] != at) { // a bucket not yet used since the ring began
        minute[slot] = at;
        totalSent -= sent[slot];
        totalHard -= hard[slot];
        sent[slot] = 0;
        hard[slot] = 0;
      }
      int sends = (int) (delta >>> 32);
      int hards = (int) (delta & 0xFFFFFFFFL);
      sent[slot] += sends;
      hard[slot] += hards;
      totalSent += sends;
      totalHard += hards;
      return true;
    }
  }

  private final Race.Progress progress;
  private final Map<String, Ring> rings = new HashMap<>();

  RingProcessor(Race.Progress progress) {
    this.progress = progress;
  }

  @Override
  public void process(Record<String, byte[]> record) {
    progress.record();
    long delta = Race.delta(record.value());
    Ring ring = rings.computeIfAbsent(record.key(), key -> new Ring());
    if (ring.add(Math.floorDiv(record.timestamp(), Race.MINUTE_MS), delta)
        && Race.crosses(ring.totalSent, ring.totalHard)) {
      progress.alerts.add(record.key());
    }
  }
}
