package io.qp.connect.s3;

import java.util.Map;
import org.apache.kafka.common.config.AbstractConfig;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.common.config.ConfigDef.Importance;
import org.apache.kafka.common.config.ConfigDef.Type;
import org.apache.kafka.common.config.types.Password;

/**
 * Settings of the S3 Avro sink. Credentials should be config-provider references (e.g.
 * {@code ${env:AWS_SECRET_ACCESS_KEY}}) resolved by the worker; both are PASSWORD-typed so they are never logged.
 */
public class S3AvroSinkConfig extends AbstractConfig {
  public static final String BUCKET = "s3.bucket.name";
  public static final String ENDPOINT = "s3.endpoint";
  public static final String REGION = "s3.region";
  public static final String ACCESS_KEY = "s3.access.key.id";
  public static final String SECRET_KEY = "s3.secret.access.key";
  public static final String PATH_STYLE = "s3.path.style.access";
  public static final String PREFIX = "s3.prefix";
  public static final String REGISTRY_URL = "schema.registry.url";
  public static final String REGISTRY_USER_INFO = "schema.registry.basic.auth.user.info";
  public static final String FLUSH_SIZE = "flush.size";
  public static final String ROTATE_INTERVAL_MS = "rotate.interval.ms";
  public static final String RETRY_BACKOFF_MS = "s3.retry.backoff.ms";

  public static final ConfigDef CONFIG_DEF = new ConfigDef()
      .define(BUCKET, Type.STRING, Importance.HIGH, "Bucket the files land in.")
      .define(ENDPOINT, Type.STRING, "", Importance.HIGH, "S3 endpoint URL (empty: AWS default).")
      .define(REGION, Type.STRING, "us-east-1", Importance.MEDIUM, "S3 region.")
      .define(ACCESS_KEY, Type.PASSWORD, "", Importance.HIGH, "Access key id (empty: AWS default chain).")
      .define(SECRET_KEY, Type.PASSWORD, "", Importance.HIGH, "Secret access key.")
      .define(PATH_STYLE, Type.BOOLEAN, true, Importance.MEDIUM, "Path-style addressing (SeaweedFS, MinIO).")
      .define(PREFIX, Type.STRING, "raw", Importance.MEDIUM, "Key prefix; files go to <prefix>/topics/<topic>/...")
      .define(REGISTRY_URL, Type.STRING, Importance.HIGH, "Confluent-compatible schema registry base URL.")
      .define(REGISTRY_USER_INFO, Type.PASSWORD, "", Importance.MEDIUM,
          "Registry basic auth as user:password (empty: none, or the URL's user info); use a config-provider "
          + "reference such as ${env:SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO}.")
      .define(FLUSH_SIZE, Type.INT, 100, ConfigDef.Range.atLeast(1), Importance.HIGH,
          "Records per file: a file is closed and uploaded when it holds this many.")
      .define(ROTATE_INTERVAL_MS, Type.LONG, 60_000L, ConfigDef.Range.atLeast(100), Importance.HIGH,
          "A file open this long (wall clock) is closed and uploaded.")
      .define(RETRY_BACKOFF_MS, Type.LONG, 5_000L, ConfigDef.Range.atLeast(0), Importance.LOW,
          "Wait before Connect redelivers after a failed upload.");

  public S3AvroSinkConfig(Map<String, String> props) {
    super(CONFIG_DEF, props);
  }

  public String bucket() {
    return getString(BUCKET);
  }

  public String endpoint() {
    return getString(ENDPOINT);
  }

  public String region() {
    return getString(REGION);
  }

  public String accessKey() {
    Password p = getPassword(ACCESS_KEY);
    return p == null ? "" : p.value();
  }

  public String secretKey() {
    Password p = getPassword(SECRET_KEY);
    return p == null ? "" : p.value();
  }

  public boolean pathStyle() {
    return getBoolean(PATH_STYLE);
  }

  public String prefix() {
    String p = getString(PREFIX);
    return p.endsWith("/") ? p.substring(0, p.length() - 1) : p;
  }

  public String registryUrl() {
    return getString(REGISTRY_URL);
  }

  public String registryUserInfo() {
    Password p = getPassword(REGISTRY_USER_INFO);
    return p == null ? "" : p.value();
  }

  public int flushSize() {
    return getInt(FLUSH_SIZE);
  }

  public long rotateIntervalMs() {
    return getLong(ROTATE_INTERVAL_MS);
  }

  public long retryBackoffMs() {
    return getLong(RETRY_BACKOFF_MS);
  }
}
