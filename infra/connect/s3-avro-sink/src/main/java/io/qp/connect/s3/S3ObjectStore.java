package io.qp.connect.s3;

import java.io.IOException;
import java.net.URI;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import software.amazon.awssdk.auth.credentials.AwsBasicCredentials;
import software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider;
import software.amazon.awssdk.auth.credentials.StaticCredentialsProvider;
import software.amazon.awssdk.core.checksums.RequestChecksumCalculation;
import software.amazon.awssdk.core.client.config.ClientOverrideConfiguration;
import software.amazon.awssdk.core.checksums.ResponseChecksumValidation;
import software.amazon.awssdk.core.exception.SdkException;
import software.amazon.awssdk.core.sync.RequestBody;
import software.amazon.awssdk.http.urlconnection.UrlConnectionHttpClient;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.s3.S3Client;
import software.amazon.awssdk.services.s3.S3ClientBuilder;
import software.amazon.awssdk.services.s3.model.ListObjectsV2Request;
import software.amazon.awssdk.services.s3.model.ListObjectsV2Response;
import software.amazon.awssdk.services.s3.model.PutObjectRequest;
import software.amazon.awssdk.services.s3.model.S3Object;

/** Any S3-compatible endpoint (AWS, SeaweedFS, MinIO), path-style optional. */
public class S3ObjectStore implements ObjectStore, AutoCloseable {
  private final S3Client s3;
  private final String bucket;

  public S3ObjectStore(S3AvroSinkConfig config) {
    // Bounded: 5 s to connect, 30 s without a byte, 60 s per attempt, 3 attempts within 180 s in all; an S3
    // endpoint that accepts connections and never answers fails the upload (retried by the task), never hangs it.
    S3ClientBuilder builder = S3Client.builder()
        .httpClient(UrlConnectionHttpClient.builder()
            .connectionTimeout(Duration.ofSeconds(5))
            .socketTimeout(Duration.ofSeconds(30))
            .build())
        .overrideConfiguration(ClientOverrideConfiguration.builder()
            .apiCallAttemptTimeout(Duration.ofSeconds(60))
            .apiCallTimeout(Duration.ofSeconds(180))
            .retryStrategy(b -> b.maxAttempts(3))
            .build())
        .region(Region.of(config.region()))
        .forcePathStyle(config.pathStyle())
        .requestChecksumCalculation(RequestChecksumCalculation.WHEN_REQUIRED)
        .responseChecksumValidation(ResponseChecksumValidation.WHEN_REQUIRED);
    if (!config.endpoint().isEmpty()) {
      builder.endpointOverride(URI.create(config.endpoint()));
    }
    if (!config.accessKey().isEmpty()) {
      builder.credentialsProvider(StaticCredentialsProvider.create(
          AwsBasicCredentials.create(config.accessKey(), config.secretKey())));
    } else {
      builder.credentialsProvider(DefaultCredentialsProvider.builder().build());
    }
    this.s3 = builder.build();
    this.bucket = config.bucket();
  }

  @Override
  public void put(String key, byte[] data) throws IOException {
    try {
      s3.putObject(PutObjectRequest.builder().bucket(bucket).key(key).contentType("application/avro").build(),
          RequestBody.fromBytes(data));
    } catch (SdkException e) {
      throw new IOException("upload of s3://" + bucket + "/" + key + " failed: " + e.getMessage(), e);
    }
  }

  @Override
  public List<String> list(String prefix) throws IOException {
    List<String> keys = new ArrayList<>();
    try {
      String token = null;
      do {
        ListObjectsV2Response page = s3.listObjectsV2(ListObjectsV2Request.builder()
            .bucket(bucket).prefix(prefix).continuationToken(token).build());
        for (S3Object o : page.contents()) {
          keys.add(o.key());
        }
        token = page.isTruncated() ? page.nextContinuationToken() : null;
      } while (token != null);
    } catch (SdkException e) {
      throw new IOException("listing s3://" + bucket + "/" + prefix + " failed: " + e.getMessage(), e);
    }
    return keys;
  }

  @Override
  public void close() {
    s3.close();
  }
}
