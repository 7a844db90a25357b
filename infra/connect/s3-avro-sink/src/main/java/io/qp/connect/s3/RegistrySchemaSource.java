package io.qp.connect.s3;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.avro.Schema;

/**
 * Fetches writer schemas from a Confluent-compatible registry (GET /schemas/ids/{id}), once per id.
 *
 * <p>Every request is bounded (connect and request timeouts). Only a registry that answered "this id does not
 * exist" (HTTP 404 with error code 40403) or a schema the registry returned that is not valid Avro marks a record
 * as bad ({@link BadRecordException}: dead-lettered). Everything else is transient and thrown as an
 * {@link IOException} so the batch is redelivered: no answer in time, 401/403 (credentials being rotated),
 * 408/429 (throttling), 5xx, a 404 without the registry's error code (wrong URL, proxy), an unreadable answer.
 *
 * <p>Basic auth: {@code userInfo} ({@code user:password}) or, when it is empty, the user info of the URL. The
 * credentials are sent as an {@code Authorization} header and never appear in a message: every message names the
 * registry by its URL without user info.
 */
public class RegistrySchemaSource implements SchemaSource {
  static final int SCHEMA_NOT_FOUND = 40403;
  private static final ObjectMapper JSON = new ObjectMapper();
  private final String baseUrl;
  private final String authorization; // "Basic ..." or null
  private final Duration requestTimeout;
  private final HttpClient http;
  private final Map<Integer, Schema> cache = new ConcurrentHashMap<>();

  public RegistrySchemaSource(String baseUrl) {
    this(baseUrl, "");
  }

  public RegistrySchemaSource(String baseUrl, String userInfo) {
    this(baseUrl, userInfo, Duration.ofSeconds(5), Duration.ofSeconds(15));
  }

  public RegistrySchemaSource(String baseUrl, Duration connectTimeout, Duration requestTimeout) {
    this(baseUrl, "", connectTimeout, requestTimeout);
  }

  public RegistrySchemaSource(String baseUrl, String userInfo, Duration connectTimeout, Duration requestTimeout) {
    URI uri = URI.create(baseUrl);
    String fromUrl = uri.getRawUserInfo();
    String credentials = userInfo != null && !userInfo.isEmpty() ? userInfo : fromUrl;
    if (fromUrl != null) {
      try {
        uri = new URI(uri.getScheme(), null, uri.getHost(), uri.getPort(), uri.getRawPath(), null, null);
      } catch (java.net.URISyntaxException e) {
        throw new IllegalArgumentException("schema.registry.url is not a valid URL (user info not shown)");
      }
      credentials = userInfo != null && !userInfo.isEmpty() ? userInfo
          : java.net.URLDecoder.decode(fromUrl, java.nio.charset.StandardCharsets.UTF_8);
    }
    String url = uri.toString();
    this.baseUrl = url.endsWith("/") ? url.substring(0, url.length() - 1) : url;
    if (credentials != null && !credentials.isEmpty()) {
      if (!credentials.contains(":")) {
        throw new IllegalArgumentException("schema registry basic auth must be user:password (value not shown)");
      }
      this.authorization = "Basic " + java.util.Base64.getEncoder().encodeToString(
          credentials.getBytes(java.nio.charset.StandardCharsets.UTF_8));
    } else {
      this.authorization = null;
    }
    this.requestTimeout = requestTimeout;
    this.http = HttpClient.newBuilder().connectTimeout(connectTimeout).build();
  }

  @Override
  public Schema byId(int id) throws BadRecordException, IOException {
    Schema cached = cache.get(id);
    if (cached != null) {
      return cached;
    }
    HttpRequest.Builder builder = HttpRequest.newBuilder(URI.create(baseUrl + "/schemas/ids/" + id))
        .timeout(requestTimeout).GET();
    if (authorization != null) {
      builder.header("Authorization", authorization);
    }
    HttpRequest request = builder.build();
    HttpResponse<String> response;
    try {
      response = http.send(request, HttpResponse.BodyHandlers.ofString());
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IOException("interrupted while fetching schema " + id + " from " + baseUrl, e);
    } catch (IOException e) { // includes HttpTimeoutException / HttpConnectTimeoutException
      throw new IOException("schema registry at " + baseUrl + " did not answer for schema id " + id + ": " + e, e);
    }
    int status = response.statusCode();
    if (status == 404 && errorCode(response.body()) == SCHEMA_NOT_FOUND) {
      throw new BadRecordException("schema id " + id + " is unknown to the registry at " + baseUrl);
    }
    if (status == 401 || status == 403) {
      throw new IOException("schema registry at " + baseUrl + " refused the sink's credentials (HTTP " + status
          + (authorization == null ? ", none configured: set schema.registry.basic.auth.user.info" : "")
          + ") for schema id " + id + " (transient, retried)");
    }
    if (status != 200) {
      throw new IOException("schema registry at " + baseUrl + " answered HTTP " + status + " for schema id " + id
          + " (transient, retried): " + abbreviate(response.body()));
    }
    JsonNode body;
    try {
      body = JSON.readTree(response.body());
    } catch (IOException e) {
      throw new IOException("schema registry at " + baseUrl + " sent an unreadable answer for schema id " + id, e);
    }
    String type = body.path("schemaType").asText("AVRO");
    if (!"AVRO".equalsIgnoreCase(type)) {
      throw new BadRecordException("schema id " + id + " is a " + type + " schema, not Avro");
    }
    Schema schema;
    try {
      schema = new Schema.Parser().parse(body.path("schema").asText());
    } catch (RuntimeException e) { // SchemaParseException, AvroRuntimeException, ...
      throw new BadRecordException("schema id " + id + " from the registry at " + baseUrl
          + " is not a valid Avro schema: " + e, e);
    }
    cache.put(id, schema);
    return schema;
  }

  private static int errorCode(String body) {
    try {
      return JSON.readTree(body).path("error_code").asInt(-1);
    } catch (IOException | RuntimeException e) {
      return -1;
    }
  }

  private static String abbreviate(String body) {
    String text = body == null ? "" : body.replaceAll("\\s+", " ");
    return text.length() > 200 ? text.substring(0, 200) + "..." : text;
  }
}
