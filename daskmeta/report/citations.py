"""Full citations of the methods daskmeta implements, for reports and methods text."""

from __future__ import annotations

#: Numbered in this order in every report's References section.
REFERENCES: tuple[str, ...] = (
    "Radua J, Mataix-Cols D. Voxel-wise meta-analysis of grey matter changes in "
    "obsessive-compulsive disorder. Br J Psychiatry 2009;195:393-402.",
    "Radua J, Mataix-Cols D, Phillips ML, El-Hage W, Kronhaus DM, Cardoner N, Surguladze S. "
    "A new meta-analytic method for neuroimaging studies that combines reported peak "
    "coordinates and statistical parametric maps. Eur Psychiatry 2012;27:605-611.",
    "Radua J, Rubia K, Canales-Rodriguez EJ, Pomarol-Clotet E, Fusar-Poli P, Mataix-Cols D. "
    "Anisotropic kernels for coordinate-based meta-analyses of neuroimaging studies. "
    "Front Psychiatry 2014;5:13.",
    "Hedges LV. Distribution theory for Glass's estimator of effect size and related "
    "estimators. J Educ Stat 1981;6:107-128.",
    "Lancaster JL, Tordesillas-Gutierrez D, Martinez M, Salinas F, Evans A, Zilles K, "
    "Mazziotta JC, Fox PT. Bias between MNI and Talairach coordinates analyzed using the "
    "ICBM-152 brain template. Hum Brain Mapp 2007;28:1194-1205.",
    "Fonov V, Evans AC, Botteron K, Almli CR, McKinstry RC, Collins DL; Brain Development "
    "Cooperative Group. Unbiased average age-appropriate atlases for pediatric studies. "
    "NeuroImage 2011;54:313-327.",
    "Egger M, Davey Smith G, Schneider M, Minder C. Bias in meta-analysis detected by a "
    "simple, graphical test. BMJ 1997;315:629-634.",
    "DerSimonian R, Laird N. Meta-analysis in clinical trials. Control Clin Trials "
    "1986;7:177-188.",
    "Higgins JPT, Thompson SG. Quantifying heterogeneity in a meta-analysis. Stat Med "
    "2002;21:1539-1558.",
    "Nichols TE, Holmes AP. Nonparametric permutation tests for functional neuroimaging: a "
    "primer with examples. Hum Brain Mapp 2002;15:1-25.",
    "Tzourio-Mazoyer N, Landeau B, Papathanassiou D, Crivello F, Etard O, Delcroix N, "
    "Mazoyer B, Joliot M. Automated anatomical labeling of activations in SPM using a "
    "macroscopic anatomical parcellation of the MNI MRI single-subject brain. NeuroImage "
    "2002;15:273-289.",
    "Rolls ET, Joliot M, Tzourio-Mazoyer N. Implementation of a new parcellation of the "
    "orbitofrontal cortex in the automated anatomical labeling atlas. NeuroImage "
    "2015;122:1-5.",
    "Lancaster JL, Woldorff MG, Parsons LM, Liotti M, Freitas CS, Rainey L, Kochunov PV, "
    "Nickerson D, Mikiten SA, Fox PT. Automated Talairach atlas labels for functional brain "
    "mapping. Hum Brain Mapp 2000;10:120-131.",
)

#: References of SDM-PSI (docs/methods.md, section 14), cited with :data:`REFERENCES` entries
#: in the methods of ``type: psi`` reports; not part of the numbered list of the other kinds.
PSI_REFERENCES: dict[str, str] = {
    "psi": "Albajes-Eizagirre A, Solanes A, Vieta E, Radua J. Voxel-based meta-analysis via "
           "permutation of subject images (PSI): theory and implementation for SDM. NeuroImage "
           "2019;186:174-184.",
    "unreported": "Albajes-Eizagirre A, Solanes A, Radua J. Meta-analysis of non-statistically "
                  "significant unreported effects. Stat Methods Med Res 2019;28:3741-3754.",
    "rubin": "Rubin DB. Multiple Imputation for Nonresponse in Surveys. New York: Wiley; 1987.",
    "d2": "Li KH, Meng XL, Raghunathan TE, Rubin DB. Significance levels from repeated p-values "
          "with multiply-imputed data. Stat Sin 1991;1:65-92.",
    "tfce": "Smith SM, Nichols TE. Threshold-free cluster enhancement: addressing problems of "
            "smoothing, threshold dependence and localisation in cluster inference. NeuroImage "
            "2009;44:83-98.",
    "freedman_lane": "Freedman D, Lane D. A nonstochastic interpretation of reported significance "
                     "levels. J Bus Econ Stat 1983;1:292-298.",
}
