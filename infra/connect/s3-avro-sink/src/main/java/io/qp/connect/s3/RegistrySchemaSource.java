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

/** Fetches writer schemas from a Confluent-compatible registry (GET /schemas/ids/{id}), once per id. */
public class RegistrySchemaSource implements SchemaSource {
  private static final ObjectMapper JSON = new ObjectMapper();
  private final String baseUrl;
  private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
  private final Map<Integer, Schema> cache = new ConcurrentHashMap<>();

  public RegistrySchemaSource(String baseUrl) {
    this.baseUrl = baseUrl.endsWith("/") ? baseUrl.substring(0, baseUrl.length() - 1) : baseUrl;
  }

  @Override
  public Schema byId(int id) throws BadRecordException, IOException {
    Schema cached = cache.get(id);
    if (cached != null) {
      return cached;
    }
    HttpRequest request = HttpRequest.newBuilder(URI.create(baseUrl + "/schemas/ids/" + id))
        .timeout(Duration.ofSeconds(15)).GET().build();
    HttpResponse<String> response;
    try {
      response = http.send(request, HttpResponse.BodyHandlers.ofString());
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IOException("interrupted while fetching schema " + id, e);
    }
    if (response.statusCode() == 404) {
      throw new BadRecordException("schema id " + id + " is unknown to the registry at " + baseUrl);
    }
    if (response.statusCode() != 200) {
      throw new IOException("registry answered HTTP " + response.statusCode() + " for schema id " + id);
    }
    JsonNode body = JSON.readTree(response.body());
    String type = body.path("schemaType").asText("AVRO");
    if (!"AVRO".equalsIgnoreCase(type)) {
      throw new BadRecordException("schema id " + id + " is a " + type + " schema, not Avro");
    }
    Schema schema = new Schema.Parser().parse(body.path("schema").asText());
    cache.put(id, schema);
    return schema;
  }
}
