package io.qp.connect.s3;

import java.time.Instant;
import java.time.ZoneOffset;
import java.time.ZonedDateTime;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Deterministic object keys:
 * {@code <prefix>/topics/<topic>/year=YYYY/month=MM/day=DD/hour=HH/<topic>+<partition>+<startOffset:019d>.avro}.
 * Date and hour are those of the file's first record (Kafka timestamp, UTC). A redelivery of the same range
 * produces the same key, so it overwrites instead of duplicating.
 */
public final class ObjectKeys {
  private ObjectKeys() {}

  public static String topicPrefix(String prefix, String topic) {
    return (prefix.isEmpty() ? "" : prefix + "/") + "topics/" + topic + "/";
  }

  public static String key(String prefix, String topic, int partition, long startOffset, long timestampMs) {
    ZonedDateTime t = Instant.ofEpochMilli(timestampMs).atZone(ZoneOffset.UTC);
    return String.format("%syear=%04d/month=%02d/day=%02d/hour=%02d/%s+%d+%019d.avro",
        topicPrefix(prefix, topic), t.getYear(), t.getMonthValue(), t.getDayOfMonth(), t.getHour(),
        topic, partition, startOffset);
  }

  /** Hour bucket (epoch hours) of a timestamp: a file never spans two hour folders. */
  public static long hourOf(long timestampMs) {
    return Math.floorDiv(timestampMs, 3_600_000L);
  }

  /** Start offset of a key written for (topic, partition), or -1 if the key belongs to another partition. */
  public static long startOffsetOf(String key, String topic, int partition) {
    String file = key.substring(key.lastIndexOf('/') + 1);
    Matcher m = Pattern.compile(Pattern.quote(topic + "+" + partition + "+") + "(\\d+)\\.avro").matcher(file);
    return m.matches() ? Long.parseLong(m.group(1)) : -1L;
  }
}
