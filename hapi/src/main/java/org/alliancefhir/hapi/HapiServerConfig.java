package org.alliancefhir.hapi;

import ca.uhn.fhir.batch2.api.IJobMaintenanceService;
import ca.uhn.fhir.batch2.jobs.config.Batch2JobsConfig;
import ca.uhn.fhir.batch2.jobs.export.BulkDataExportProvider;
import ca.uhn.fhir.batch2.jobs.imprt.BulkDataImportProvider;
import ca.uhn.fhir.batch2.maintenance.JobMaintenanceServiceImpl;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.interceptor.api.IInterceptorService;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.binstore.DatabaseBinaryContentStorageSvcImpl;
import ca.uhn.fhir.jpa.binary.api.IBinaryStorageSvc;
import ca.uhn.fhir.jpa.config.HapiJpaConfig;
import ca.uhn.fhir.jpa.config.JpaConfig;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.model.entity.StorageSettings;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.provider.JpaSystemProvider;
import ca.uhn.fhir.jpa.provider.ValueSetOperationProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import ca.uhn.fhir.jpa.subscription.match.config.SubscriptionProcessorConfig;
import ca.uhn.fhir.jpa.subscription.match.deliver.email.IEmailSender;
import ca.uhn.fhir.jpa.subscription.submit.config.SubscriptionSubmitterConfig;
import ca.uhn.fhir.jpa.topic.SubscriptionTopicConfig;
import ca.uhn.fhir.rest.api.EncodingEnum;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.interceptor.RequestValidatingInterceptor;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import ca.uhn.fhir.validation.IInstanceValidatorModule;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import jakarta.persistence.EntityManagerFactory;
import org.apache.commons.dbcp2.BasicDataSource;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.dstu2.model.Subscription;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.factory.annotation.Qualifier;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.boot.web.servlet.ServletRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;
import org.springframework.context.annotation.Primary;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;

import javax.sql.DataSource;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.Map;
import java.util.Set;

/**
 * Wires HAPI's R4 JPA server: HAPI's own Spring configurations plus the few beans HAPI expects
 * the host application to provide. Settings follow the public test server (hapi.fhir.org) where
 * that makes sense; knobs come from application.properties (mostly HAPI_* environment variables).
 */
@Configuration
@Import({
	JpaR4Config.class, // FhirContext, all R4 DAOs and resource providers, JpaConfig (validation, bulk export...)
	HapiJpaConfig.class, // paging provider, stale-search cleanup, fulltext service stub, resource counts
	ThreadPoolFactoryConfig.class,
	JpaBatch2Config.class, // batch2 engine (bulk export runs on it)
	Batch2JobsConfig.class, // batch2 job definitions
	SubscriptionChannelConfig.class, // in-JVM channels; batch2 needs them even without subscriptions
	SubscriptionSubmitterConfig.class,
	SubscriptionProcessorConfig.class,
	SubscriptionTopicConfig.class // R5 Backport topic subscriptions on R4 (without it they are accepted but never fire)
})
public class HapiServerConfig {
	private static final Logger ourLog = LoggerFactory.getLogger(HapiServerConfig.class);

	@Value("${hapi.db.url}")
	private String myDbUrl;

	// H2 by default; ctl.sh sets all four for PostgreSQL (HAPI_DB=postgres)
	@Value("${hapi.db.driver:org.h2.Driver}")
	private String myDbDriver;

	@Value("${hapi.db.username:sa}")
	private String myDbUsername;

	@Value("${hapi.db.password:}")
	private String myDbPassword;

	@Value("${hapi.db.dialect:ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect}")
	private String myDbDialect;

	@Value("${hapi.db.max-connections:20}")
	private int myDbMaxConnections;

	@Value("${server.port}")
	private int myPort;

	@Value("${hapi.client-id-strategy:ANY}")
	private String myClientIdStrategy;

	@Value("${hapi.search-cache-millis:60000}")
	private long mySearchCacheMillis;

	@Value("${hapi.request-validation:off}")
	private String myRequestValidation;

	@Value("${hapi.batch2-interval-millis:1000}")
	private long myBatch2IntervalMillis;

	@Value("${hapi.subscription-interval-millis:1000}")
	private long mySubscriptionIntervalMillis;

	@Value("${hapi.validation-cache:flush}")
	private String myValidationCache;

	@Bean(destroyMethod = "close")
	public BasicDataSource dataSource() {
		BasicDataSource ds = new BasicDataSource();
		ds.setDriverClassName(myDbDriver);
		ds.setUrl(myDbUrl);
		ds.setUsername(myDbUsername);
		ds.setPassword(myDbPassword);
		ds.setMaxTotal(myDbMaxConnections);
		ourLog.info("HAPI harness database: {} ({}, dialect {})", myDbUrl, myDbDriver, myDbDialect);
		return ds;
	}

	@Bean
	@Primary
	public LocalContainerEntityManagerFactoryBean entityManagerFactory(
			ConfigurableListableBeanFactory theBeanFactory,
			FhirContext theFhirContext,
			JpaStorageSettings theStorageSettings,
			DataSource theDataSource) {
		LocalContainerEntityManagerFactoryBean emf = HapiEntityManagerFactoryUtil.newEntityManagerFactory(
				theBeanFactory, theFhirContext, theStorageSettings);
		emf.setPersistenceUnitName("ALLIANCE_HAPI_PU");
		emf.setDataSource(theDataSource);
		// HAPI's HibernatePropertiesProvider reads the dialect from exactly this map.
		Map<String, Object> jpa = new HashMap<>();
		jpa.put("hibernate.dialect", myDbDialect);
		jpa.put("hibernate.hbm2ddl.auto", "update");
		jpa.put("hibernate.search.enabled", "false");
		jpa.put("hibernate.jdbc.batch_size", "20");
		jpa.put("hibernate.format_sql", "false");
		jpa.put("hibernate.show_sql", "false");
		jpa.put("hibernate.cache.use_query_cache", "false");
		jpa.put("hibernate.cache.use_second_level_cache", "false");
		jpa.put("hibernate.cache.use_structured_entries", "false");
		jpa.put("hibernate.cache.use_minimal_puts", "false");
		emf.setJpaPropertyMap(jpa);
		return emf;
	}

	@Bean
	@Primary
	public JpaTransactionManager transactionManager(EntityManagerFactory theEntityManagerFactory) {
		return new JpaTransactionManager(theEntityManagerFactory);
	}

	@Bean
	public JpaStorageSettings storageSettings() {
		JpaStorageSettings s = new JpaStorageSettings();
		// As on hapi.fhir.org
		s.setAllowContainsSearches(true);
		s.setAllowMultipleDelete(true);
		s.setAllowInlineMatchUrlReferences(false);
		s.setAllowExternalReferences(true);
		s.setIndexMissingFields(StorageSettings.IndexEnabledEnum.ENABLED);
		s.setCountSearchResultsUpTo(50000);
		s.setFetchSizeDefaultMaximum(10000);
		s.setExpungeEnabled(true);
		s.setDeleteExpungeEnabled(true);
		s.setFilterParameterEnabled(true);
		s.setDefaultSearchParamsCanBeOverridden(false);
		s.setIndexOnContainedResources(true);
		s.setIndexIdentifierOfType(true);
		Set<String> localBases = new LinkedHashSet<>();
		localBases.add("http://127.0.0.1:" + myPort + "/fhir");
		localBases.add("http://localhost:" + myPort + "/fhir");
		s.setTreatBaseUrlsAsLocal(localBases);
		// Client-assigned ids on PUT: ANY (also purely numeric), ALPHANUMERIC (HAPI default) or NOT_ALLOWED
		s.setResourceClientIdStrategy(clientIdStrategy(myClientIdStrategy));
		// Identical searches re-use cached results for this long (HAPI default 60 s); <= 0 disables
		s.setReuseCachedSearchResultsForMillis(mySearchCacheMillis > 0 ? mySearchCacheMillis : null);
		// Let batch2 jobs (bulk export) move on to the next step without waiting for a maintenance pass
		s.setJobFastTrackingEnabled(true);
		return s;
	}

	private static JpaStorageSettings.ClientIdStrategyEnum clientIdStrategy(String theName) {
		try {
			return JpaStorageSettings.ClientIdStrategyEnum.valueOf(theName.trim().toUpperCase());
		} catch (IllegalArgumentException e) {
			throw new IllegalArgumentException(
					"HAPI_CLIENT_ID_STRATEGY must be ANY, ALPHANUMERIC or NOT_ALLOWED, not '" + theName + "'");
		}
	}

	@Bean
	public PartitionSettings partitionSettings() {
		return new PartitionSettings();
	}

	@Bean
	public SubscriptionSettings subscriptionSettings() {
		SubscriptionSettings s = new SubscriptionSettings();
		s.addSupportedSubscriptionType(Subscription.SubscriptionChannelType.RESTHOOK);
		// Writes are queued and handed to the matcher by a scheduled job (HAPI default every 5 s)
		s.setSubscriptionIntervalInMs(mySubscriptionIntervalMillis);
		return s;
	}

	@Bean
	public IBinaryStorageSvc binaryStorageSvc() {
		return new DatabaseBinaryContentStorageSvcImpl();
	}

	/** Required once subscriptions are processed; we have no mail server, so just log. */
	@Bean
	public IEmailSender emailSender() {
		return details -> ourLog.info("Email subscription delivery ignored (no mail server): {}", details);
	}

	/** The batch2 maintenance pass moves jobs (bulk export) from step to step; HAPI's default is once a minute. */
	@Bean
	public Object batch2MaintenanceInterval(IJobMaintenanceService theMaintenanceService) {
		if (theMaintenanceService instanceof JobMaintenanceServiceImpl impl && myBatch2IntervalMillis > 0) {
			impl.setScheduledJobFrequencyMillis(myBatch2IntervalMillis);
		}
		return myBatch2IntervalMillis;
	}

	/** "flush" (default): a written Questionnaire/ValueSet/CodeSystem is seen by the next $validate. */
	@Bean
	public Object validationCacheFlusher(
			IInterceptorService theInterceptorService,
			@Qualifier(JpaConfig.JPA_VALIDATION_SUPPORT_CHAIN) IValidationSupport theChain) {
		if ("flush".equalsIgnoreCase(myValidationCache.trim()) && theChain instanceof ValidationSupportChain chain) {
			ValidationCacheFlusher flusher = new ValidationCacheFlusher(chain);
			theInterceptorService.registerInterceptor(flusher);
			return flusher;
		}
		return "validation cache kept (HAPI default: 10 min)";
	}

	@Bean
	public RestfulServer restfulServer(
			IFhirSystemDao<?, ?> theSystemDao,
			@Qualifier("myResourceProvidersR4") ResourceProviderFactory theResourceProviders,
			JpaSystemProvider<?, ?> theSystemProvider,
			JpaStorageSettings theStorageSettings,
			ISearchParamRegistry theSearchParamRegistry,
			IValidationSupport theValidationSupport,
			DatabaseBackedPagingProvider thePagingProvider,
			BulkDataExportProvider theBulkDataExportProvider,
			BulkDataImportProvider theBulkDataImportProvider, // $import (pull from https/http URLs; Batch2JobsConfig defines the bean)
			ValueSetOperationProvider theValueSetOperationProvider,
			@Qualifier("myInstanceValidator") IInstanceValidatorModule theInstanceValidator) {
		// Score Observations point at the exact response version they were computed from; HAPI strips
		// versions from stored references unless told to keep them at a path.
		theSystemDao.getContext().getParserOptions().setDontStripVersionsFromReferencesAtPaths(
				"Observation.derivedFrom", "DetectedIssue.evidence.detail");
		RestfulServer server = new RestfulServer(theSystemDao.getContext());
		server.registerProviders(theResourceProviders.createProviders());
		server.registerProvider(theSystemProvider);
		server.registerProvider(theBulkDataExportProvider);
		server.registerProvider(theBulkDataImportProvider);
		server.registerProvider(theValueSetOperationProvider);

		JpaCapabilityStatementProvider capabilities = new JpaCapabilityStatementProvider(
				server, theSystemDao, theStorageSettings, theSearchParamRegistry, theValidationSupport);
		capabilities.setImplementationDescription("alliance-fhir local HAPI FHIR R4 server");
		server.setServerConformanceProvider(capabilities);

		thePagingProvider.setDefaultPageSize(20);
		thePagingProvider.setMaximumPageSize(500);
		server.setPagingProvider(thePagingProvider);

		server.setDefaultResponseEncoding(EncodingEnum.JSON);
		server.setDefaultPrettyPrint(true);

		String mode = myRequestValidation.trim().toLowerCase();
		if (!mode.equals("off")) {
			// "warn": like hapi.fhir.org, results only go into a response header; "fail": 422 on errors
			RequestValidatingInterceptor validating = new RequestValidatingInterceptor();
			validating.addValidatorModule(theInstanceValidator);
			validating.setFailOnSeverity(mode.equals("fail") ? ResultSeverityEnum.ERROR : null);
			validating.setAddResponseHeaderOnSeverity(null);
			validating.setAddResponseOutcomeHeaderOnSeverity(ResultSeverityEnum.INFORMATION);
			validating.setIgnoreValidatorExceptions(true);
			server.registerInterceptor(validating);
		}
		return server;
	}

	@Bean
	public ServletRegistrationBean<RestfulServer> fhirServlet(RestfulServer theServer) {
		ServletRegistrationBean<RestfulServer> reg = new ServletRegistrationBean<>(theServer, "/fhir/*");
		reg.setName("fhir");
		reg.setLoadOnStartup(1);
		return reg;
	}
}
