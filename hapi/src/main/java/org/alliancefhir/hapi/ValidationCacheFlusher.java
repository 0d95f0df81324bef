package org.alliancefhir.hapi;

import ca.uhn.fhir.interceptor.api.Hook;
import ca.uhn.fhir.interceptor.api.Pointcut;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.springframework.transaction.support.TransactionSynchronization;
import org.springframework.transaction.support.TransactionSynchronizationManager;

import java.util.Set;

/**
 * HAPI's validation support chain caches canonical lookups (e.g. "Questionnaire url|version")
 * for 10 minutes, including "not found". A QuestionnaireResponse validated right after its
 * Questionnaire was created or changed would then be checked against a stale (or no)
 * Questionnaire. This interceptor drops the chain's expiring cache (not the StructureDefinition
 * snapshots, so it is cheap) after every committed write of a conformance resource it looks up.
 */
public class ValidationCacheFlusher {
	private static final Set<String> TYPES = Set.of("Questionnaire", "ValueSet", "CodeSystem");

	private final ValidationSupportChain myChain;

	public ValidationCacheFlusher(ValidationSupportChain theChain) {
		myChain = theChain;
	}

	@Hook(Pointcut.STORAGE_PRECOMMIT_RESOURCE_CREATED)
	public void created(IBaseResource theResource) {
		flushIfRelevant(theResource);
	}

	@Hook(Pointcut.STORAGE_PRECOMMIT_RESOURCE_UPDATED)
	public void updated(IBaseResource theResource) {
		flushIfRelevant(theResource);
	}

	@Hook(Pointcut.STORAGE_PRECOMMIT_RESOURCE_DELETED)
	public void deleted(IBaseResource theResource) {
		flushIfRelevant(theResource);
	}

	/** POST [base]/$expunge with expungeEverything=true (a quick way for tests to empty the server) */
	@Hook(Pointcut.STORAGE_PRESTORAGE_EXPUNGE_EVERYTHING)
	public void expungeEverything() {
		myChain.invalidateExpiringCaches();
	}

	private void flushIfRelevant(IBaseResource theResource) {
		if (theResource == null || !TYPES.contains(theResource.fhirType())) {
			return;
		}
		myChain.invalidateExpiringCaches();
		if (TransactionSynchronizationManager.isSynchronizationActive()) {
			// once more after commit, in case a concurrent validation re-cached the old version
			TransactionSynchronizationManager.registerSynchronization(new TransactionSynchronization() {
				@Override
				public void afterCommit() {
					myChain.invalidateExpiringCaches();
				}
			});
		}
	}
}
