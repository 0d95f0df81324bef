package org.alliancefhir.hapi;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.context.annotation.Import;

/**
 * Entry point of the local HAPI FHIR JPA test server (FHIR R4, H2 or PostgreSQL, served under /fhir).
 *
 * <p>All wiring lives in {@link HapiServerConfig}; the Spring Boot auto-configurations that
 * would fight HAPI's own (DataSource, JPA, Flyway, Quartz, Elasticsearch, Thymeleaf...) are
 * excluded in application.properties.
 */
@SpringBootApplication
@Import(HapiServerConfig.class)
public class HapiServerApplication {

	public static void main(String[] args) {
		SpringApplication app = new SpringApplication(HapiServerApplication.class);
		// HAPI's bean graph has cycles; Boot refuses those unless told otherwise.
		app.setAllowCircularReferences(true);
		app.run(args);
	}
}
